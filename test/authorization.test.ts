/**
 * The authorization model, cell by cell: every RPC called by every kind of caller against a real server.
 * An allowed call may still fail on its (empty) arguments, but never for who the caller is; a denied call
 * gets UNAUTHENTICATED (no credential) or PERMISSION_DENIED with the matching `sts-error-code`. The table is
 * src/auth/policy.ts, the same one the README prints; a new RPC without a row fails here.
 */
import { readFileSync } from 'node:fs';
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { type JWK, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CALLERS, type CallerKind, POLICY, allowed, policyMarkdown } from '../src/auth/policy.js';
import * as pop from '../src/gen/sts/v1/pop.js';
import * as secret from '../src/gen/sts/v1/secret.js';
import * as session from '../src/gen/sts/v1/session.js';
import { call } from './helpers/call.js';
import { adminToken, createApp } from './helpers/directory.js';
import { type TestSts, startTestSts } from './helpers/server.js';

type Def = Record<string, { path: string }>;
type Module = Record<string, unknown>;
const SERVICES: [string, Def, Module][] = [
  ['pop', pop.PopServiceService as unknown as Def, pop as Module],
  ['session', session.SessionServiceService as unknown as Def, session as Module],
  ['secret', secret.SecretServiceService as unknown as Def, secret as Module],
];

/** The empty request of an RPC: `<Method>Request.fromPartial({})` from the generated module. */
function emptyRequest(module: Module, path: string): unknown {
  const type = module[`${path.slice(path.lastIndexOf('/') + 1)}Request`] as { fromPartial(o: object): unknown };
  return type.fromPartial({});
}

let t: TestSts;
const bearer: Record<CallerKind, string | undefined> = {
  anonymous: undefined,
  application: undefined,
  'trusted application': undefined,
  'resource server': undefined,
  'admin key': undefined,
};

beforeAll(async () => {
  t = await startTestSts();
  bearer['admin key'] = adminToken(t);
  bearer.application = (await createApp(t, 'plain')).token;
  bearer['trusted application'] = (await createApp(t, 'trusted', { trusted: true })).token;
  bearer['resource server'] = (await createApp(t, 'backend')).token;
  const { publicKey } = await generateKeyPair('ECDH-ES+A256KW');
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid: 'rs', alg: 'ECDH-ES+A256KW', use: 'enc' };
  await call(
    t.secret.putResourceServer,
    t.secret,
    { resourceServer: { resourceServerId: 'backend', credential: { $case: 'applicationId', value: 'backend' }, audiences: ['api'], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [jwk] }) } } },
    bearer['admin key'],
  );
});
afterAll(async () => {
  await t.stop(true);
});

function rawCall(client: unknown, name: string, request: unknown, token: string | undefined): Promise<ServiceError | null> {
  const md = new Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  const method = (client as Record<string, (...a: unknown[]) => void>)[name]!;
  return new Promise((resolve) => method.call(client, request, md, { deadline: Date.now() + 20_000 }, (err: ServiceError | null) => resolve(err)));
}

describe('authorization model', () => {
  it('every RPC of every service has a row, and the README prints the same table', () => {
    const methods = SERVICES.flatMap(([, def]) => Object.values(def).map((m) => m.path)).sort();
    expect(Object.keys(POLICY).sort()).toEqual(methods);
    expect(readFileSync(new URL('../README.md', import.meta.url), 'utf8')).toContain(policyMarkdown());
  });

  for (const [clientName, def, module] of SERVICES) {
    for (const [name, m] of Object.entries(def)) {
      it(`${m.path}: ${CALLERS.map((c) => `${c} ${allowed(POLICY[m.path]!, c) ? 'allowed' : 'denied'}`).join(', ')}`, async () => {
        const client = (t as unknown as Record<string, unknown>)[clientName];
        for (const caller of CALLERS) {
          const err = await rawCall(client, name, emptyRequest(module, m.path), bearer[caller]);
          const stsCode = err?.metadata.get('sts-error-code')[0];
          const where = `${m.path} as ${caller}: ${err ? `${status[err.code]} ${stsCode} ${err.details}` : 'OK'}`;
          if (allowed(POLICY[m.path]!, caller)) {
            expect(['unauthenticated', 'permission_denied'], where).not.toContain(stsCode);
            expect(err?.code, where).not.toBe(status.UNIMPLEMENTED);
          } else if (caller === 'anonymous') {
            expect([err?.code, stsCode], where).toEqual([status.UNAUTHENTICATED, 'unauthenticated']);
          } else {
            expect([err?.code, stsCode], where).toEqual([status.PERMISSION_DENIED, 'permission_denied']);
          }
        }
      });
    }
  }
});
