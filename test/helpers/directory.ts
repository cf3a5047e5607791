/** Builds a small directory through the admin RPCs of a running test server. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Application } from '../../src/gen/sts/v1/session.js';
import type { ApplicationRecord } from '../../src/session/directory.js';
import { call } from './call.js';
import type { TestSts } from './server.js';

export function adminToken(t: TestSts): string {
  return readFileSync(join(t.dataDir, 'admin.token'), 'utf8').trim();
}

/** A directory record of an application (no secret behind its hash), for tests below the RPC layer. */
export function appRecord(id: string, overrides: Partial<ApplicationRecord> = {}): ApplicationRecord {
  return {
    id,
    name: id,
    // The form of a real hash (replicated records must have one), of no secret anyone knows.
    secretHash: `scrypt$14$8$1$${'A'.repeat(22)}$${'A'.repeat(43)}`,
    tags: [],
    defaultRoles: [],
    trusted: false,
    admin: false,
    personalFields: false,
    fullToken: false,
    minSecurityLevel: 0,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    disabled: false,
    createdAt: 0,
    transformSources: [],
    dataKeyGroup: '',
    ...overrides,
  };
}

export function appDefaults(id: string, overrides: Partial<Application> = {}): Application {
  return Application.fromPartial({ applicationId: id, name: `${id} app`, ...overrides });
}

/** Creates an application and logs it on; returns its secret and application token id. */
export async function createApp(t: TestSts, id: string, overrides: Partial<Application> = {}): Promise<{ secret: string; token: string }> {
  const created = await call(t.session.createApplication, t.session, { application: appDefaults(id, overrides), applicationSecret: '' }, adminToken(t));
  const logon = await call(
    t.session.logonApplication,
    t.session,
    { credential: { $case: 'applicationCredential', value: { applicationId: id, applicationSecret: created.applicationSecret } } },
  );
  return { secret: created.applicationSecret, token: logon.applicationToken!.applicationTokenId };
}

export async function createUser(t: TestSts, username: string, password: string, extra: { email?: string; cellphone?: string } = {}): Promise<string> {
  const res = await call(
    t.session.createUser,
    t.session,
    {
      user: {
        uid: '',
        username,
        firstName: username[0]!.toUpperCase() + username.slice(1),
        lastName: 'Tester',
        email: extra.email ?? `${username}@example.org`,
        cellphone: extra.cellphone ?? '+4790000000',
        personRef: `ref-${username}`,
        disabled: false,
        createTime: undefined,
      },
      password,
    },
    adminToken(t),
  );
  return res.user!.uid;
}

export async function addRole(t: TestSts, uid: string, applicationId: string, roleName: string, roleValue = 'true'): Promise<void> {
  await call(t.session.addUserRole, t.session, { uid, role: { applicationId, organizationName: 'ACME', roleName, roleValue } }, adminToken(t));
}
