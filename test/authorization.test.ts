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
import { CALLERS, type CallerKind, POLICY, SESSION_ACCESS, SESSION_CALLERS, type SessionCaller, allowed, policyMarkdown, sessionAccessMarkdown, sessionAllowed } from '../src/auth/policy.js';
import * as pop from '../src/gen/sts/v1/pop.js';
import * as secret from '../src/gen/sts/v1/secret.js';
import * as session from '../src/gen/sts/v1/session.js';
import { call } from './helpers/call.js';
import { addRole, adminToken, createApp, createUser } from './helpers/directory.js';
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

/**
 * The session access table, cell by cell: a fresh session of the application "owner" for every cell, its user
 * token id presented by each kind of caller. Allowed: the call works on the session. Denied: the answer is
 * exactly the one an unknown token id gets, and the session is untouched.
 */
describe('session access model', () => {
  const PASSWORD = 'session access password';
  const token: Record<SessionCaller, string> = { 'participant (its own token id)': '', 'other application': '', 'trusted application': '', 'admin application': '' };
  const appId: Record<SessionCaller, string> = { 'participant (its own token id)': 'owner', 'other application': 'stranger', 'trusted application': 'keyholder', 'admin application': 'directory-admin' };

  beforeAll(async () => {
    token['participant (its own token id)'] = (await createApp(t, 'owner')).token;
    token['other application'] = (await createApp(t, 'stranger')).token;
    token['trusted application'] = (await createApp(t, 'keyholder', { trusted: true })).token;
    token['admin application'] = (await createApp(t, 'directory-admin', { admin: true })).token;
    const uid = await createUser(t, 'sam', PASSWORD);
    for (const id of Object.values(appId)) await addRole(t, uid, id, 'member');
  });

  const ownerSession = async (): Promise<string> =>
    (await call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'sam', password: PASSWORD } }, ticketApplicationId: '' }, token['participant (its own token id)'])).userToken!.userTokenId;
  const ownerSees = async (id: string): Promise<boolean> =>
    (await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenId', value: id } }, token['participant (its own token id)'])).active;

  /** The RPC called with a token id: its answer (or error) in a comparable form. */
  const REQUEST: Record<string, (id: string, caller: SessionCaller) => unknown> = {
    ValidateUserToken: (id) => ({ token: { $case: 'userTokenId', value: id } }),
    GetUserTokenByUserTokenId: (id) => ({ userTokenId: id }),
    RefreshUserToken: (id) => ({ userTokenId: id }),
    CreateUserTicket: (id) => ({ userTokenId: id, ticketApplicationId: '' }),
    ReleaseUserToken: (id) => ({ userTokenId: id, endSession: false }),
    // The caller's own view: the transform rule (target's transform_sources) is not what is tested here.
    TransformUserToken: (id, caller) => ({ userTokenId: id, targetApplicationId: appId[caller], stepUp: undefined }),
  };
  async function answer(method: string, id: string, caller: SessionCaller): Promise<{ ok: boolean; shape: string }> {
    const name = method.slice(method.lastIndexOf('/') + 1);
    const fn = name[0]!.toLowerCase() + name.slice(1);
    const client = t.session as unknown as Record<string, (...a: unknown[]) => void>;
    try {
      const res = (await call(client[fn] as never, t.session, REQUEST[name]!(id, caller) as never, token[caller])) as Record<string, unknown>;
      return { ok: name === 'ValidateUserToken' ? res.active === true : true, shape: JSON.stringify(res) };
    } catch (err) {
      const e = err as ServiceError;
      return { ok: false, shape: JSON.stringify([status[e.code], e.details, e.metadata.get('sts-error-code')]) };
    }
  }

  it('the README prints the session access table', () => {
    expect(readFileSync(new URL('../README.md', import.meta.url), 'utf8')).toContain(sessionAccessMarkdown());
  });

  for (const [method, rule] of Object.entries(SESSION_ACCESS)) {
    it(`${method}: ${SESSION_CALLERS.map((c) => `${c} ${sessionAllowed(rule, c) ? 'allowed' : 'denied'}`).join(', ')}`, async () => {
      for (const caller of SESSION_CALLERS) {
        const id = await ownerSession();
        const unknown = await answer(method, 'x'.repeat(43), caller);
        const got = await answer(method, id, caller);
        const where = `${method} with the owner's token id as ${caller}: ${got.shape}`;
        if (sessionAllowed(rule, caller)) {
          expect(got.ok, where).toBe(true);
          if (method.endsWith('/ReleaseUserToken')) expect(await ownerSees(id), where).toBe(false);
        } else {
          // Exactly an unknown id's answer, and the owner's session is as it was.
          expect(got.shape, where).toBe(unknown.shape);
          expect(await ownerSees(id), where).toBe(true);
        }
      }
    });
  }
});
