/**
 * Issue 14, "Sessions belong to the applications that take part; abuse cannot be turned against users": each
 * attack of the issue against a real server, as a test that failed before the change.
 *
 * - session authority: another application's user token id is as good as unknown (validate, read, refresh,
 *   ticket, release, transform), a ticket redeemer gets a token id of its own, a participant's release ends
 *   its part, a transform only makes a view for an application that accepts the caller, JWTs keep "aud", and
 *   sessions stored before participants keep working for their creator;
 * - third-party tokens: bound to the calling application (aud or azp) and used once;
 * - throttles: failures of unknown application ids do not lock out a known one, a known id's failures lock
 *   out that id only, password spraying from one application exhausts its budget;
 * - caller-bound data keys, explicit typing of everything STS signs, STS never its own identity provider;
 * - the small ones: identity provider claims checked like admin input, "iat" required by default, RotateKeys
 *   coalescing.
 * The fairness of password hashing under a flood is in hash-fairness.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { status, type ServiceError } from '@grpc/grpc-js';
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import type { OptionName } from '../src/config/defaults.js';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import type { IdentityProvider } from '../src/gen/sts/v1/secret.js';
import { signCompact, unwrapKey, wrapKey } from '../src/pop/jose-ops.js';
import { refOf } from '../src/session/sessions.js';
import { call, callError } from './helpers/call.js';
import { addRole, adminToken, appDefaults, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const MIN = 60_000;
const PASSWORD = 'correct horse battery staple';
const T0 = Date.UTC(2026, 5, 1);

let t: TestSts | undefined;
const servers: Server[] = [];
afterEach(async () => {
  await t?.stop(true);
  t = undefined;
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
});

type App = { secret: string; token: string };

interface World {
  t: TestSts;
  clock: ManualClock;
  admin: string;
  a: App;
  b: App;
  uid: string;
}

/** Applications "app-a" and "app-b" (unrelated) and user "alice" with a role in each. */
async function world(overrides: Partial<Record<OptionName, string | number | boolean>> = {}): Promise<World> {
  const clock = new ManualClock(T0);
  t = await startTestSts({ clock, overrides });
  const a = await createApp(t, 'app-a');
  const b = await createApp(t, 'app-b');
  const uid = await createUser(t, 'alice', PASSWORD);
  await addRole(t, uid, 'app-a', 'reader');
  await addRole(t, uid, 'app-b', 'editor');
  return { t, clock, admin: adminToken(t), a, b, uid };
}

function logon(w: World, app: App, username = 'alice', password = PASSWORD, ticketApplicationId = '') {
  return call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredential', value: { username, password } }, ticketApplicationId }, app.token);
}

const validate = async (w: World, id: string, app: App) => (await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: id } }, app.token)).active;
const validateJwt = async (w: World, jwt: string, app: App) => (await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: jwt } }, app.token)).active;

/** An error (or answer) in a form two calls can be compared in. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    return `OK ${JSON.stringify(await p)}`;
  } catch (err) {
    const e = err as ServiceError;
    return `${status[e.code]} ${e.metadata.get('sts-error-code')[0]} ${e.details}`;
  }
}

const stsCode = (e: ServiceError) => [status[e.code], e.metadata.get('sts-error-code')[0]];

// ---------------------------------------------------------------------------------------------------------

describe('session authority: a user token id authorizes only the application it was issued to', () => {
  it('another application holding the token id gets exactly what an unknown id gets, and changes nothing', async () => {
    const w = await world();
    const id = (await logon(w, w.a)).userToken!.userTokenId;
    const unknown = randomBytes(32).toString('base64url');
    const session = w.t.session;
    for (const [name, run] of [
      ['ValidateUserToken', (x: string) => call(session.validateUserToken, session, { token: { $case: 'userTokenId', value: x } }, w.b.token)],
      ['GetUserTokenByUserTokenId', (x: string) => call(session.getUserTokenByUserTokenId, session, { userTokenId: x }, w.b.token)],
      ['RefreshUserToken', (x: string) => call(session.refreshUserToken, session, { userTokenId: x }, w.b.token)],
      ['CreateUserTicket', (x: string) => call(session.createUserTicket, session, { userTokenId: x, ticketApplicationId: 'app-b' }, w.b.token)],
      ['TransformUserToken', (x: string) => call(session.transformUserToken, session, { userTokenId: x, targetApplicationId: 'app-b', stepUp: undefined }, w.b.token)],
      ['ReleaseUserToken', (x: string) => call(session.releaseUserToken, session, { userTokenId: x, endSession: false }, w.b.token)],
      ['ReleaseUserToken (whole session)', (x: string) => call(session.releaseUserToken, session, { userTokenId: x, endSession: true }, w.b.token)],
    ] as const) {
      expect(await outcome(run(id)), name).toBe(await outcome(run(unknown)));
    }
    // app-a's session is untouched: still active, and its idle expiry was not moved by app-b's refresh.
    const still = await call(session.getUserTokenByUserTokenId, session, { userTokenId: id }, w.a.token);
    expect(still.userToken!.applicationId).toBe('app-a');
    expect(still.userToken!.expireTime!.getTime()).toBe(T0 + 60 * MIN);
    // A plain application where the user has no role at all is no better off.
    const stranger = await createApp(w.t, 'stranger');
    expect(await validate(w, id, stranger)).toBe(false);
  });

  it('a ticket redeemer takes part with a token id of its own; neither application can use the other\'s', async () => {
    const w = await world();
    const res = await logon(w, w.a, 'alice', PASSWORD, 'app-b');
    const aId = res.userToken!.userTokenId;
    const redeemed = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: res.userTicket }, w.b.token);
    const bId = redeemed.userToken!.userTokenId;
    expect(bId).not.toBe(aId);
    expect(JSON.stringify(redeemed)).not.toContain(aId);
    expect([await validate(w, bId, w.b), await validate(w, aId, w.a)]).toEqual([true, true]);
    expect([await validate(w, aId, w.b), await validate(w, bId, w.a)]).toEqual([false, false]);
    // One session: the same sid in both JWTs, and the participants listed for the administrator.
    const sid = (jwt: string) => (JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { sid: string }).sid;
    expect(sid(redeemed.userTokenJwt)).toBe(sid(res.userTokenJwt));
    const listed = await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, w.admin);
    expect(listed.sessions.map((s) => s.participantApplicationIds)).toEqual([['app-a', 'app-b']]);
    // A refresh by either moves the shared idle expiry.
    w.clock.advance(5 * MIN);
    await call(w.t.session.refreshUserToken, w.t.session, { userTokenId: bId }, w.b.token);
    expect((await call(w.t.session.getUserTokenByUserTokenId, w.t.session, { userTokenId: aId }, w.a.token)).userToken!.expireTime!.getTime()).toBe(T0 + 65 * MIN);
  });

  it('an application that joins one session again and again holds at most 16 token ids for it (the oldest go)', async () => {
    const w = await world();
    const res = await logon(w, w.a, 'alice', PASSWORD, 'app-b');
    const aId = res.userToken!.userTokenId;
    let ticket = res.userTicket;
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      w.clock.advance(1); // joins are ordered by time
      const redeemed = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: ticket }, w.b.token);
      ids.push(redeemed.userToken!.userTokenId);
      ticket = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: ids.at(-1)!, ticketApplicationId: 'app-b' }, w.b.token)).userTicket;
    }
    const active = await Promise.all(ids.map((id) => validate(w, id, w.b)));
    expect(active.filter(Boolean)).toHaveLength(16);
    expect(active.slice(-16).every(Boolean)).toBe(true);
    // The session and app-a's part are untouched.
    expect(await validate(w, aId, w.a)).toBe(true);
  });

  it('ReleaseUserToken ends the caller\'s part; end_session ends the whole SSO session for every participant', async () => {
    const w = await world();
    const c = await createApp(w.t, 'app-c');
    const res = await logon(w, w.a, 'alice', PASSWORD, 'app-b');
    const aId = res.userToken!.userTokenId;
    const b = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: res.userTicket }, w.b.token);
    const bId = b.userToken!.userTokenId;
    const ticketForC = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: aId, ticketApplicationId: 'app-c' }, w.a.token)).userTicket;

    // app-b logs the user out of app-b only: its token id and JWT stop, app-a's keep working.
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: bId, endSession: false }, w.b.token);
    expect([await validate(w, bId, w.b), await validateJwt(w, b.userTokenJwt, w.b)]).toEqual([false, false]);
    expect([await validate(w, aId, w.a), await validateJwt(w, res.userTokenJwt, w.a)]).toEqual([true, true]);
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, w.admin)).sessions[0]!.participantApplicationIds).toEqual(['app-a']);

    // app-a forces the cross-application logout: every participant's id and every ticket end at once.
    const cRes = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: ticketForC }, c.token);
    const ticketForB = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: aId, ticketApplicationId: 'app-b' }, w.a.token)).userTicket;
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: aId, endSession: true }, w.a.token);
    expect([await validate(w, aId, w.a), await validate(w, cRes.userToken!.userTokenId, c)]).toEqual([false, false]);
    expect(stsCode(await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: ticketForB }, w.b.token)))).toEqual(['NOT_FOUND', 'not_found']);
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, w.admin)).sessions).toEqual([]);
  });

  it('the last participant to leave ends the session and its tickets', async () => {
    const w = await world();
    const res = await logon(w, w.a);
    const ticket = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: res.userToken!.userTokenId, ticketApplicationId: 'app-b' }, w.a.token)).userTicket;
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: res.userToken!.userTokenId, endSession: false }, w.a.token);
    expect((await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: ticket }, w.b.token))).code).toBe(status.NOT_FOUND);
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, w.admin)).sessions).toEqual([]);
  });

  it('TransformUserToken makes a view only for an application that accepts the caller (transform_sources)', async () => {
    const w = await world();
    // A third application with an "admin" role for alice, which does not list app-a or app-b as a source.
    const crm = await createApp(w.t, 'crm');
    await addRole(w.t, w.uid, 'crm', 'admin');
    const aId = (await logon(w, w.a)).userToken!.userTokenId;
    const refused = await callError(call(w.t.session.transformUserToken, w.t.session, { userTokenId: aId, targetApplicationId: 'crm', stepUp: undefined }, w.a.token));
    expect(stsCode(refused)).toEqual(['PERMISSION_DENIED', 'permission_denied']);
    expect(refused.details).toBe('application crm does not accept views made by application app-a (transform_sources)');
    // Being trusted (or even an administrator application) is no exception.
    const trusted = await createApp(w.t, 'trusted-app', { trusted: true, admin: true });
    await addRole(w.t, w.uid, 'trusted-app', 'user');
    const tId = (await logon(w, trusted)).userToken!.userTokenId;
    expect(stsCode(await callError(call(w.t.session.transformUserToken, w.t.session, { userTokenId: tId, targetApplicationId: 'crm', stepUp: undefined }, trusted.token)))).toEqual(['PERMISSION_DENIED', 'permission_denied']);
    // Once crm names app-a, app-a may: crm's view, with a token id for crm, which crm accepts and app-a cannot use.
    await call(w.t.session.updateApplication, w.t.session, { application: appDefaults('crm', { transformSources: ['app-a'] }), updateMask: ['transform_sources'], generateSecret: false, applicationSecret: '' }, w.admin);
    const view = await call(w.t.session.transformUserToken, w.t.session, { userTokenId: aId, targetApplicationId: 'crm', stepUp: undefined }, w.a.token);
    expect(view.userToken!.roles.map((r) => r.roleName)).toEqual(['admin']);
    expect([await validate(w, view.userToken!.userTokenId, crm), await validateJwt(w, view.userTokenJwt, crm)]).toEqual([true, true]);
    expect(await validate(w, view.userToken!.userTokenId, w.a)).toBe(false);
    // app-b, not named, still may not.
    const bId = (await logon(w, w.b)).userToken!.userTokenId;
    expect((await callError(call(w.t.session.transformUserToken, w.t.session, { userTokenId: bId, targetApplicationId: 'crm', stepUp: undefined }, w.b.token))).code).toBe(status.PERMISSION_DENIED);
  });

  it('JWT validation keeps aud: a JWT made for one application is not active at another', async () => {
    const w = await world();
    const res = await logon(w, w.a);
    expect([await validateJwt(w, res.userTokenJwt, w.a), await validateJwt(w, res.userTokenJwt, w.b)]).toEqual([true, false]);
    const claims = JSON.parse(Buffer.from(res.userTokenJwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims.aud).toBe('app-a');
    expect(JSON.stringify(claims)).not.toContain(res.userToken!.userTokenId);
  });

  it('an administrator application may validate, read and release another application\'s token id, nothing more', async () => {
    const w = await world();
    const boss = await createApp(w.t, 'boss', { admin: true });
    const aId = (await logon(w, w.a)).userToken!.userTokenId;
    expect(await validate(w, aId, boss)).toBe(true);
    expect((await call(w.t.session.getUserTokenByUserTokenId, w.t.session, { userTokenId: aId }, boss.token)).userToken!.applicationId).toBe('boss');
    expect((await callError(call(w.t.session.refreshUserToken, w.t.session, { userTokenId: aId }, boss.token))).code).toBe(status.NOT_FOUND);
    expect((await callError(call(w.t.session.createUserTicket, w.t.session, { userTokenId: aId, ticketApplicationId: 'boss' }, boss.token))).code).toBe(status.NOT_FOUND);
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: aId, endSession: false }, boss.token);
    expect(await validate(w, aId, w.a)).toBe(false);
    expect(w.t.logs.some((l) => l.includes('"event":"user.logout"') && l.includes('"application":"boss"') && l.includes('"participant":"app-a"'))).toBe(true);
  });

  it('sessions stored before participants (no participants list) keep working for the application that created them', async () => {
    const w = await world();
    const tokenId = randomBytes(32).toString('base64url');
    const sid = refOf(tokenId);
    const now = w.clock.now();
    // Exactly what the previous SessionStore wrote: keyed by the SHA-256 of the creator's token id.
    const legacy = { uid: w.uid, applicationId: 'app-a', securityLevel: 2, authMethod: 'password', issuedAt: now, expiresAt: now + 30 * MIN, absoluteExpiresAt: now + 60 * MIN, idleTimeoutMs: 30 * MIN };
    await w.t.sts.store.ephemeral.upsert('user_token', sid, JSON.stringify(legacy), 30 * MIN, w.uid);
    // A JWT the previous version signed for it: no "pref".
    const legacyJwt = signCompact(w.t.sts.ring, Buffer.from(JSON.stringify({ iss: 'urn:sts:local', sub: w.uid, aud: 'app-a', iat: now / 1000, exp: now / 1000 + 1800, sid, acr: '2', roles: [] })), { typ: 'sts-user+jwt' }).jws;

    expect([await validate(w, tokenId, w.a), await validateJwt(w, legacyJwt, w.a)]).toEqual([true, true]);
    expect((await call(w.t.session.refreshUserToken, w.t.session, { userTokenId: tokenId }, w.a.token)).userToken!.uid).toBe(w.uid);
    // Only for its creator.
    expect(await validate(w, tokenId, w.b)).toBe(false);
    // It can be handed on as any session: the redeemer gets its own id.
    const ticket = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: tokenId, ticketApplicationId: 'app-b' }, w.a.token)).userTicket;
    const bId = (await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: ticket }, w.b.token)).userToken!.userTokenId;
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, w.admin)).sessions[0]!.participantApplicationIds).toEqual(['app-a', 'app-b']);
    // The creator leaves: its id and JWT end, app-b's part goes on.
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: tokenId, endSession: false }, w.a.token);
    expect([await validate(w, tokenId, w.a), await validateJwt(w, legacyJwt, w.a), await validate(w, bId, w.b)]).toEqual([false, false, true]);
  });
});

// ---------------------------------------------------------------------------------------------------------

interface Idp {
  issuer: string;
  key: CryptoKey;
  jwk: JWK;
}

async function makeIdp(issuer = 'https://idp.example'): Promise<Idp> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { issuer, key: privateKey, jwk: { ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' } };
}

function putIdp(w: World, idp: Pick<Idp, 'issuer' | 'jwk'>, extra: Partial<IdentityProvider> = {}) {
  const provider: IdentityProvider = {
    issuer: idp.issuer,
    jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [idp.jwk] }) },
    audiences: ['api://orders'],
    algorithms: ['ES256'],
    clockSkew: undefined,
    subjectClaim: '',
    securityLevel: 0,
    applicationAudiences: [{ applicationId: 'app-a', audiences: ['client-a'] }, { applicationId: 'app-b', audiences: ['client-b'] }],
    tokensWithoutJti: false,
    acceptTokensWithoutIat: false,
    ...extra,
  };
  return call(w.t.secret.putIdentityProvider, w.t.secret, { identityProvider: provider }, w.admin);
}

interface Claims {
  [k: string]: unknown;
}

async function idpToken(w: World, idp: Idp, claims: Claims = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(w.clock.now() / 1000);
  const body: Claims = { iss: idp.issuer, sub: 'carol', aud: 'client-a', iat: now, exp: now + 600, jti: randomBytes(16).toString('base64url'), ...claims };
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  return new SignJWT(body).setProtectedHeader({ alg: 'ES256', kid: 'idp-1', typ: 'JWT', ...header }).sign(idp.key);
}

const thirdParty = (w: World, app: App, token: string) => call(w.t.session.createUserFromThirdPartyToken, w.t.session, { thirdPartyToken: token, ticketApplicationId: '' }, app.token);

describe('third-party tokens are bound to the calling application and used once', () => {
  it('a token for a resource server, or for another application, starts no session; azp may name the application', async () => {
    const w = await world();
    const idp = await makeIdp();
    await putIdp(w, idp);
    const forApi = await callError(thirdParty(w, w.a, await idpToken(w, idp, { aud: 'api://orders' })));
    expect([...stsCode(forApi), forApi.details]).toEqual(['UNAUTHENTICATED', 'token_invalid', 'third-party token audience not accepted']);
    const forB = await idpToken(w, idp, { aud: 'client-b' });
    expect(stsCode(await callError(thirdParty(w, w.a, forB)))).toEqual(['UNAUTHENTICATED', 'token_invalid']);
    expect((await thirdParty(w, w.b, forB)).userToken!.applicationId).toBe('app-b');
    // An access token for the API that names app-a's client as its authorized party (OpenID Connect "azp").
    expect((await thirdParty(w, w.a, await idpToken(w, idp, { aud: ['api://orders'], azp: 'client-a' }))).userToken!.applicationId).toBe('app-a');
    // An application the provider registers no audience for cannot use its tokens at all.
    const c = await createApp(w.t, 'app-c');
    const none = await callError(thirdParty(w, c, await idpToken(w, idp, { aud: 'client-a' })));
    expect(stsCode(none)).toEqual(['FAILED_PRECONDITION', 'failed_precondition']);
    expect(none.details).toContain('registers no audience for application app-c');
  });

  it('a token is used once: a second use, at the same or another application, is refused', async () => {
    const w = await world();
    const idp = await makeIdp();
    await putIdp(w, idp, { applicationAudiences: [{ applicationId: 'app-a', audiences: ['shared'] }, { applicationId: 'app-b', audiences: ['shared'] }] });
    const token = await idpToken(w, idp, { aud: 'shared' });
    expect((await thirdParty(w, w.a, token)).userCreated).toBe(true);
    for (const app of [w.a, w.b, w.b]) {
      const again = await callError(thirdParty(w, app, token));
      expect([...stsCode(again), again.details]).toEqual(['UNAUTHENTICATED', 'token_invalid', 'third-party token already used: each token starts one session']);
    }
    // Of concurrent uses of one fresh token exactly one wins.
    const fresh = await idpToken(w, idp, { aud: 'shared' });
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => thirdParty(w, i % 2 ? w.a : w.b, fresh)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: (await thirdParty(w, w.a, await idpToken(w, idp, { aud: 'shared' }))).userToken!.uid }, w.admin)).sessions).toHaveLength(3);
  });

  it('a token without jti is refused, unless the provider is marked so; then only a short-lived one is accepted', async () => {
    const w = await world({ 'session.thirdPartyTokenWithoutJtiMaxLifetimeMs': 5 * MIN });
    const idp = await makeIdp();
    await putIdp(w, idp);
    const noJti = await callError(thirdParty(w, w.a, await idpToken(w, idp, { jti: undefined })));
    expect([...stsCode(noJti), noJti.details]).toEqual(['UNAUTHENTICATED', 'token_invalid', 'third-party token has no "jti" claim: a token starts one session only, so it must be identifiable']);
    await putIdp(w, idp, { tokensWithoutJti: true });
    const now = Math.floor(w.clock.now() / 1000);
    const long = await callError(thirdParty(w, w.a, await idpToken(w, idp, { jti: undefined, exp: now + 3600 })));
    expect(long.details).toBe('third-party token lives too long for a provider without "jti" (session.thirdPartyTokenWithoutJtiMaxLifetimeMs)');
    expect((await thirdParty(w, w.a, await idpToken(w, idp, { jti: undefined, exp: now + 120 }))).userToken!.applicationId).toBe('app-a');
  });

  it('a token without iat is refused by default, accepted where the provider says so', async () => {
    const w = await world();
    const idp = await makeIdp();
    await putIdp(w, idp);
    const token = await idpToken(w, idp, { iat: undefined });
    const e = await callError(thirdParty(w, w.a, token));
    expect([...stsCode(e), e.details]).toEqual(['UNAUTHENTICATED', 'token_invalid', 'third-party token has no "iat" claim (the provider does not accept tokens without one)']);
    await putIdp(w, idp, { acceptTokensWithoutIat: true });
    expect((await thirdParty(w, w.a, token)).userCreated).toBe(true);
  });

  it('claims that become user fields pass the admin input checks: a control character creates no user', async () => {
    const w = await world();
    const idp = await makeIdp();
    await putIdp(w, idp);
    const bad = await callError(thirdParty(w, w.a, await idpToken(w, idp, { sub: 'mallory', given_name: 'Mal\u001b[31mlory', preferred_username: 'mallory' })));
    expect([...stsCode(bad), bad.details]).toEqual([
      'INVALID_ARGUMENT',
      'invalid_argument',
      'third_party_token: the token\'s "given_name" claim must not contain control characters (it becomes the user\'s first_name)',
    ]);
    const long = await callError(thirdParty(w, w.a, await idpToken(w, idp, { sub: 'mallory', preferred_username: 'mallory', email: `${'m'.repeat(300)}@example.org` })));
    expect(long.details).toContain('"email" claim must be 0 to 256 characters long');
    const badSub = await callError(thirdParty(w, w.a, await idpToken(w, idp, { sub: 'line\nbreak' })));
    expect(badSub.details).toContain('"sub" claim that must not contain control characters');
    expect((await call(w.t.session.listUsers, w.t.session, { usernamePrefix: '', pageSize: 0, pageToken: '' }, w.admin)).users.map((u) => u.username)).toEqual(['alice']);
  });
});

// ---------------------------------------------------------------------------------------------------------

const logonApp = (w: World, applicationId: string, applicationSecret: string) =>
  call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value: { applicationId, applicationSecret } } });

describe('throttles that cannot be turned against legitimate callers', () => {
  it('failed logons with unknown application ids lock out unknown ids from that address, never a known application', async () => {
    const w = await world({ 'session.throttleMaxFailuresPerAddress': 20 });
    for (let i = 0; i < 20; i++) expect((await callError(logonApp(w, `ghost-${i}`, 'x'.repeat(32)))).code).toBe(status.UNAUTHENTICATED);
    expect((await callError(logonApp(w, 'ghost-x', 'x'.repeat(32)))).code).toBe(status.RESOURCE_EXHAUSTED);
    // Same address, its correct secret: never refused for the others' failures.
    expect((await logonApp(w, 'app-a', w.a.secret)).applicationToken!.applicationId).toBe('app-a');
    // And a known id's wrong secret is counted under its id, not refused for the address.
    expect((await callError(logonApp(w, 'app-b', 'y'.repeat(32)))).code).toBe(status.UNAUTHENTICATED);
  });

  it('nobody can lock out an application whose secret STS made: its correct secret passes after any number of failures with its id', async () => {
    const w = await world({ 'session.throttleMaxFailuresPerApplication': 5, 'session.throttleMaxFailuresPerAddress': 5 });
    const failedLines = () => w.t.logs.filter((l) => l.includes('"application.logon_failed"'));
    const before = failedLines().length;
    for (let i = 0; i < 12; i++) expect((await callError(logonApp(w, 'app-a', `wrong-${i}`.padEnd(32, 'x')))).code).toBe(status.UNAUTHENTICATED);
    expect((await logonApp(w, 'app-a', w.a.secret)).applicationToken!.applicationId).toBe('app-a');
    // The failures were not counted under the address either: an unknown id from there is not refused yet.
    expect((await callError(logonApp(w, 'ghost', 'x'.repeat(32)))).code).toBe(status.UNAUTHENTICATED);
    // Unthrottled, its failures cannot flood the audit log: 10 lines a minute per address, one line saying the
    // rest are counted, then their count.
    expect(failedLines().length - before).toBe(10 + 1); // app-a's ten, ghost's one
    expect(w.t.logs.filter((l) => l.includes('"application.logon_failures_suppressed"')).map((l) => JSON.parse(l) as unknown)).toEqual([
      expect.objectContaining({ application: 'app-a', perMinute: 10 }),
    ]);
    w.clock.advance(MIN);
    await callError(logonApp(w, 'app-a', 'z'.repeat(32)));
    expect(JSON.parse(failedLines().at(-1)!)).toMatchObject({ event: 'application.logon_failed', suppressed: 2 });
  });

  it('UpdateApplication generate_secret gives a new secret STS made, without a per-id limit; not with application_secret', async () => {
    const w = await world({ 'session.throttleMaxFailuresPerApplication': 5 });
    const chosen = 'chosen-by-an-operator-2026';
    await call(w.t.session.createApplication, w.t.session, { application: appDefaults('app-c'), applicationSecret: chosen }, w.admin);
    const both = await callError(call(w.t.session.updateApplication, w.t.session, { application: appDefaults('app-c'), updateMask: [], applicationSecret: chosen, generateSecret: true }, w.admin));
    expect([...stsCode(both), both.details]).toEqual(['INVALID_ARGUMENT', 'invalid_argument', 'generate_secret: give either application_secret or generate_secret, not both']);
    const { applicationSecret } = await call(w.t.session.updateApplication, w.t.session, { application: appDefaults('app-c'), updateMask: [], applicationSecret: '', generateSecret: true }, w.admin);
    expect(applicationSecret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await callError(logonApp(w, 'app-c', chosen))).code).toBe(status.UNAUTHENTICATED);
    for (let i = 0; i < 8; i++) await callError(logonApp(w, 'app-c', `wrong-${i}`.padEnd(32, 'x')));
    expect((await logonApp(w, 'app-c', applicationSecret)).applicationToken!.applicationId).toBe('app-c');
    // Without generate_secret the response carries no secret.
    expect((await call(w.t.session.updateApplication, w.t.session, { application: appDefaults('app-c', { name: 'C' }), updateMask: ['name'], applicationSecret: '', generateSecret: false }, w.admin)).applicationSecret).toBe('');
  });

  it('a secret an operator chose keeps the per-id limit, even one that passes the 128-bit rule; the failures lock out that id only', async () => {
    const w = await world({ 'session.throttleMaxFailuresPerApplication': 5 });
    // Words glued together pass the estimate (keyed hash) but are no proof of randomness: still limited.
    const glued = 'CorrectHorseBatteryStaple1984xyz';
    await call(w.t.session.createApplication, w.t.session, { application: appDefaults('app-glued'), applicationSecret: glued }, w.admin);
    for (let i = 0; i < 5; i++) expect((await callError(logonApp(w, 'app-glued', `wrong-${i}`.padEnd(32, 'x')))).code).toBe(status.UNAUTHENTICATED);
    expect(stsCode(await callError(logonApp(w, 'app-glued', glued)))).toEqual(['RESOURCE_EXHAUSTED', 'throttled']);

    const weak = 'chosen-by-an-operator-2026';
    await call(w.t.session.createApplication, w.t.session, { application: appDefaults('app-weak'), applicationSecret: weak }, w.admin);
    const weakToken = (await logonApp(w, 'app-weak', weak)).applicationToken!.applicationTokenId;
    for (let i = 0; i < 5; i++) expect((await callError(logonApp(w, 'app-weak', `wrong-${i}`))).code).toBe(status.UNAUTHENTICATED);
    const locked = await callError(logonApp(w, 'app-weak', weak));
    expect(stsCode(locked)).toEqual(['RESOURCE_EXHAUSTED', 'throttled']);
    expect((await logonApp(w, 'app-b', w.b.secret)).applicationToken!.applicationId).toBe('app-b');
    // Its tokens keep working meanwhile, and the window ends the lockout.
    expect((await call(w.t.session.getApplicationInfo, w.t.session, {}, weakToken)).application!.applicationId).toBe('app-weak');
    w.clock.advance(16 * MIN);
    expect((await logonApp(w, 'app-weak', weak)).applicationToken!.applicationId).toBe('app-weak');
  });

  it('a secret reset while a logon with the old secret is being checked ends that logon too', async () => {
    // A slow Argon2id setting (10 passes over 46 MiB: several hundred ms), so the reset surely lands while the
    // logon's hash runs; the reset's own secret is a strong one (keyed hash: at once).
    const w = await world({ 'session.passwordHash.memoryKib': 47104, 'session.passwordHash.timeCost': 10 });
    const old = 'chosen-by-an-operator-2026';
    await call(w.t.session.createApplication, w.t.session, { application: appDefaults('app-weak'), applicationSecret: old }, w.admin);
    const logon = outcome(logonApp(w, 'app-weak', old));
    await new Promise((r) => setTimeout(r, 20)); // the logon is in its hash
    await call(w.t.session.updateApplication, w.t.session, { application: appDefaults('app-weak'), updateMask: [], generateSecret: false, applicationSecret: '6b57d6284c67c0ef33928eb577b6711ca8a892b97c14dbe0' }, w.admin);
    const result = await logon;
    // Either refused, or its token no longer active: never a live token for the secret that was reset.
    if (result.startsWith('OK')) {
      const id = (JSON.parse(result.slice(3)) as { applicationToken: { applicationTokenId: string } }).applicationToken.applicationTokenId;
      expect((await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: id }, w.b.token)).active).toBe(false);
    } else expect(result).toBe('UNAUTHENTICATED invalid_credentials invalid application credentials');
  });

  it('password spraying from one application exhausts its budget of distinct usernames; other applications are unaffected', async () => {
    const w = await world({ 'session.throttleMaxUsernamesPerApplication': 5 });
    for (let i = 0; i < 5; i++) expect((await callError(logon(w, w.a, `user-${i}`, 'Summer2026!'))).code).toBe(status.UNAUTHENTICATED);
    // The sixth username: refused before any password check, as is everything else from app-a in this window.
    const sprayed = await callError(logon(w, w.a, 'user-5', 'Summer2026!'));
    expect(stsCode(sprayed)).toEqual(['RESOURCE_EXHAUSTED', 'throttled']);
    expect((await callError(logon(w, w.a))).code).toBe(status.RESOURCE_EXHAUSTED);
    // app-b's users are not touched by app-a's spraying.
    expect((await logon(w, w.b)).userToken!.applicationId).toBe('app-b');
    // Repeated failures for one username count once against the budget.
    for (let i = 0; i < 6; i++) await callError(logon(w, w.b, 'user-0', `guess ${i}`));
    expect((await logon(w, w.b)).userToken!.applicationId).toBe('app-b');
    // The window ends it.
    w.clock.advance(15 * MIN);
    expect((await logon(w, w.a)).userToken!.applicationId).toBe('app-a');
  });

  it('one application reaching its limit for a username does not lock that user out of the others', async () => {
    const w = await world({ 'session.throttleMaxFailures': 3, 'session.throttleMaxFailuresPerUser': 5, 'session.throttleFreeFailures': 2 });
    for (let i = 0; i < 3; i++) await callError(logon(w, w.a, 'alice', `guess ${i}`));
    expect((await callError(logon(w, w.a))).code).toBe(status.RESOURCE_EXHAUSTED);
    expect((await logon(w, w.b)).userToken!.applicationId).toBe('app-b');
    // The per-user limit across applications still caps guessing spread over many of them.
    for (let i = 0; i < 3; i++) await callError(logon(w, w.b, 'alice', `guess ${i}`));
    const c = await createApp(w.t, 'app-c');
    expect((await callError(logon(w, c))).code).toBe(status.RESOURCE_EXHAUSTED);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('caller-bound data keys', () => {
  it('another trusted application\'s Unwrap and Rewrap fail exactly like a wrong context; a data key group shares', async () => {
    const w = await world();
    const one = await createApp(w.t, 'vault-one', { trusted: true });
    const two = await createApp(w.t, 'vault-two', { trusted: true });
    const context = Buffer.from('tenant=42');
    const dk = await call(w.t.pop.generateDataKey, w.t.pop, { keyLengthBits: 256, context }, one.token);
    expect((await call(w.t.pop.unwrap, w.t.pop, { wrappedKey: dk.wrappedKey, context }, one.token)).plaintext).toEqual(dk.plaintext);
    const wrongContext = await outcome(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: dk.wrappedKey, context: Buffer.from('tenant=43') }, two.token));
    expect(wrongContext).toBe('INVALID_ARGUMENT decryption_failed unwrap failed');
    expect(await outcome(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: dk.wrappedKey, context }, two.token))).toBe(wrongContext);
    expect(await outcome(call(w.t.pop.rewrap, w.t.pop, { wrappedKey: dk.wrappedKey, context }, two.token))).toBe(wrongContext);

    // Applications an administrator put in one data key group share their keys.
    const g1 = await createApp(w.t, 'billing-1', { trusted: true, dataKeyGroup: 'billing' });
    const g2 = await createApp(w.t, 'billing-2', { trusted: true, dataKeyGroup: 'billing' });
    const shared = await call(w.t.pop.generateDataKey, w.t.pop, { keyLengthBits: 128, context }, g1.token);
    expect((await call(w.t.pop.unwrap, w.t.pop, { wrappedKey: shared.wrappedKey, context }, g2.token)).plaintext).toEqual(shared.plaintext);
    expect(await outcome(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: shared.wrappedKey, context }, one.token))).toBe(wrongContext);
  });

  it('a data key wrapped before keys were bound still unwraps; Rewrap binds it to the caller', async () => {
    const w = await world();
    const one = await createApp(w.t, 'vault-one', { trusted: true });
    const two = await createApp(w.t, 'vault-two', { trusted: true });
    const context = Buffer.from('legacy');
    const plaintext = randomBytes(32);
    const legacy = wrapKey(w.t.sts.ring, plaintext, context).wrapped; // no owner: the previous format
    expect((await call(w.t.pop.unwrap, w.t.pop, { wrappedKey: legacy, context }, two.token)).plaintext).toEqual(plaintext);
    const bound = (await call(w.t.pop.rewrap, w.t.pop, { wrappedKey: legacy, context }, one.token)).wrappedKey;
    expect(unwrapKey(w.t.sts.ring, bound, context, { owner: 'application:vault-one' }).bound).toBe(true);
    expect((await call(w.t.pop.unwrap, w.t.pop, { wrappedKey: bound, context }, one.token)).plaintext).toEqual(plaintext);
    expect((await callError(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: bound, context }, two.token))).details).toBe('unwrap failed');
    expect(w.t.logs.some((l) => l.includes('"event":"pop.unwrap"') && l.includes('"unboundDataKey":true'))).toBe(true);
  });

  it('with pop.unboundDataKeys=refuse (the prod default) a data key from before owners opens for no application', async () => {
    const w = await world({ 'pop.unboundDataKeys': 'refuse' });
    const one = await createApp(w.t, 'vault-one', { trusted: true });
    const context = Buffer.from('legacy');
    const legacy = wrapKey(w.t.sts.ring, randomBytes(32), context).wrapped;
    const wrongContext = await outcome(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: legacy, context: Buffer.from('other') }, one.token));
    expect(await outcome(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: legacy, context }, one.token))).toBe(wrongContext);
    expect(await outcome(call(w.t.pop.rewrap, w.t.pop, { wrappedKey: legacy, context }, one.token))).toBe(wrongContext);
    // Keys bound to their owner are not affected.
    const dk = await call(w.t.pop.generateDataKey, w.t.pop, { keyLengthBits: 256, context }, one.token);
    expect((await call(w.t.pop.unwrap, w.t.pop, { wrappedKey: dk.wrappedKey, context }, one.token)).plaintext).toEqual(dk.plaintext);
  });
});

// ---------------------------------------------------------------------------------------------------------

/** Serves a JWKS over HTTP (an identity provider's jwks_uri). */
async function serveJwks(doc: () => unknown): Promise<string> {
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc())));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
}

describe('explicit typing: STS is never its own identity provider', () => {
  it('every JWS Sign makes carries typ: the caller\'s, or JOSE', async () => {
    const w = await world();
    const signer = await createApp(w.t, 'signer', { trusted: true });
    const typOf = (jws: string) => (JSON.parse(Buffer.from(jws.split('.')[0]!, 'base64url').toString()) as { typ?: string }).typ;
    const plain = await call(w.t.pop.sign, w.t.pop, { payload: Buffer.from('{}'), type: '', contentType: '' }, signer.token);
    expect(typOf(plain.jws)).toBe('JOSE');
    const typed = await call(w.t.pop.sign, w.t.pop, { payload: Buffer.from('{}'), type: 'application/example+jwt', contentType: '' }, signer.token);
    expect(typOf(typed.jws)).toBe('application/example+jwt');
  });

  it('registering STS\'s own issuer or a JWKS with one of its keys is refused', async () => {
    const w = await world();
    const own = await callError(putIdp(w, { issuer: 'urn:sts:local', jwk: (await makeIdp()).jwk }));
    expect([...stsCode(own), own.details]).toEqual([
      'INVALID_ARGUMENT',
      'invalid_argument',
      'identity_provider.issuer: is STS\'s own issuer (session.issuer): STS never accepts its own tokens as third-party tokens',
    ]);
    const stsJwks = JSON.parse((await call(w.t.pop.getJwks, w.t.pop, {})).jwksJson) as { keys: JWK[] };
    const sig = stsJwks.keys.find((k) => k.use === 'sig')!;
    const withOwnKey = await callError(putIdp(w, { issuer: 'https://mirror.example', jwk: sig }));
    expect(withOwnKey.details).toBe('identity_provider.jwks_json: key 0 is one of STS\'s own keys: STS is never its own identity provider');
    expect((await call(w.t.secret.listIdentityProviders, w.t.secret, {}, w.admin)).identityProviders).toEqual([]);
  });

  it('a subject token STS signed (through Sign) is refused even from a jwks_uri that serves STS\'s keys; STS-typed tokens are refused', async () => {
    const w = await world();
    const signer = await createApp(w.t, 'signer', { trusted: true });
    const rs = await createApp(w.t, 'notes-rs');
    const { publicKey } = await generateKeyPair('ECDH-ES+A256KW', { extractable: true });
    await call(
      w.t.secret.putResourceServer,
      w.t.secret,
      { resourceServer: { resourceServerId: 'notes', credential: { $case: 'applicationId', value: 'notes-rs' }, audiences: ['api://orders'], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'rs', alg: 'ECDH-ES+A256KW', use: 'enc' }] }) } } },
      w.admin,
    );
    // A provider whose JWKS URL turns out to serve STS's own JWKS.
    const stsJwksJson = (await call(w.t.pop.getJwks, w.t.pop, {})).jwksJson;
    const jwksUri = await serveJwks(() => JSON.parse(stsJwksJson) as unknown);
    const mirror = 'https://mirror.example';
    await putIdp(w, { issuer: mirror, jwk: {} }, { jwksSource: { $case: 'jwksUri', value: jwksUri }, algorithms: ['EdDSA'] });
    const now = Math.floor(w.clock.now() / 1000);
    const minted = await call(w.t.pop.sign, w.t.pop, { payload: Buffer.from(JSON.stringify({ iss: mirror, sub: 'victim', aud: 'api://orders', iat: now, exp: now + 600 })), type: 'JWT', contentType: '' }, signer.token);
    const refused = await callError(call(w.t.secret.getUserSecret, w.t.secret, { subjectToken: minted.jws }, rs.token));
    expect([...stsCode(refused), refused.details]).toEqual(['UNAUTHENTICATED', 'token_invalid', 'subject token signed with one of STS\'s own keys']);
    expect(await w.t.sts.store.durable.list('user_secret')).toEqual([]);

    // A real provider's token typed as one of STS's own is refused too.
    const idp = await makeIdp();
    await putIdp(w, idp);
    const typed = await callError(call(w.t.secret.getUserSecret, w.t.secret, { subjectToken: await idpToken(w, idp, { aud: 'api://orders' }, { typ: 'sts-user+jwt' }) }, rs.token));
    expect(typed.details).toBe('subject token is typed as an STS token');
    expect((await call(w.t.secret.getUserSecret, w.t.secret, { subjectToken: await idpToken(w, idp, { aud: 'api://orders' }) }, rs.token)).subject).toBe('carol');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('RotateKeys coalescing', () => {
  it('10 concurrent RotateKeys make one staged key per kind, and every call returns it', async () => {
    const w = await world();
    // Past the second in which start-up staged its keys (those would be returned too).
    w.clock.advance(1000);
    const before = (await call(w.t.pop.listKeys, w.t.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: false }, w.admin)).keys.length;
    const results = await Promise.all(Array.from({ length: 10 }, () => call(w.t.pop.rotateKeys, w.t.pop, { kinds: [] }, w.admin)));
    const kids = results.map((r) => r.created.map((k) => k.kid).sort().join(','));
    expect(new Set(kids).size).toBe(1);
    expect(results[0]!.created).toHaveLength(3);
    expect((await call(w.t.pop.listKeys, w.t.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: false }, w.admin)).keys).toHaveLength(before + 3);
    // A second later it rotates again.
    w.clock.advance(1000);
    const later = await call(w.t.pop.rotateKeys, w.t.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, w.admin);
    expect(later.created[0]!.kid).not.toBe(results[0]!.created.find((k) => k.kind === KeyKind.KEY_KIND_SIGNING)!.kid);
  });
});

