/**
 * The browser test page's script (served by STS with http.testPage). It fetches STS's JWKS from the page's
 * own origin and encrypts with jose in the browser (WebCrypto), so a proxy or a log between the browser and
 * whatever receives the JWE sees only ciphertext. Bundled with jose into page.js by
 * scripts/build-test-page.ts: the page loads nothing from any other origin (its CSP says so too).
 */
import { CompactEncrypt, base64url, importJWK, type JWK } from 'jose';

/** The protected-header type STS requires of a credential JWE (src/session/credential-jwe.ts). */
const CREDENTIAL_JWE_TYP = 'sts-credential+jwe';
/** Lifetime of a credential JWE: STS accepts `exp` at most session.credentialJweMaxLifetimeMs ahead (5 min). */
const CREDENTIAL_LIFETIME_S = 120;

const byId = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
};

const status = (message: string, error = false): void => {
  const el = byId<HTMLParagraphElement>('status');
  el.textContent = message;
  el.classList.toggle('error', error);
};

/**
 * The key to encrypt to: STS lists its PRIMARY keys first, so the first key with use "enc" is the one in
 * use (a STAGED one after it also decrypts, but will only become PRIMARY later). Fetched for every JWE: the
 * browser's HTTP cache honours the JWKS's Cache-Control, which never outlives a key change.
 */
async function encryptionKey(): Promise<{ jwk: JWK & { alg: string; kid: string }; key: CryptoKey | Uint8Array }> {
  const res = await fetch('.well-known/jwks.json', { headers: { accept: 'application/jwk-set+json' } });
  if (!res.ok) throw new Error(`fetching the JWKS failed: HTTP ${res.status}`);
  const { keys } = (await res.json()) as { keys: JWK[] };
  const jwk = keys.find((k) => k.use === 'enc');
  if (!jwk?.alg || !jwk.kid) throw new Error('STS publishes no encryption key');
  byId('key-kid').textContent = jwk.kid;
  byId('key-alg').textContent = jwk.alg;
  return { jwk: jwk as JWK & { alg: string; kid: string }, key: await importJWK(jwk, jwk.alg) };
}

/** A compact JWE of `plaintext` to STS's primary encryption key (enc A256GCM, as STS's own clients use). */
async function encrypt(plaintext: Uint8Array, header: { typ?: string; cty?: string }): Promise<string> {
  const { jwk, key } = await encryptionKey();
  return new CompactEncrypt(plaintext).setProtectedHeader({ alg: jwk.alg, enc: 'A256GCM', kid: jwk.kid, ...header }).encrypt(key);
}

/** What the TS client's encryptCredential puts in a LogonUser credential: RFC 7519 sections 4.1.3, 4.1.4, 4.1.7. */
function credentialClaims(username: string, password: string, audience: string): Uint8Array {
  const claims = {
    username,
    password,
    aud: audience,
    // 256 random bits: STS accepts each jti once (it needs at least 128).
    jti: base64url.encode(crypto.getRandomValues(new Uint8Array(32))),
    exp: Math.floor(Date.now() / 1000) + CREDENTIAL_LIFETIME_S,
  };
  return new TextEncoder().encode(JSON.stringify(claims));
}

/** Runs a form's action, reporting its outcome in #status; the form is never submitted anywhere. */
function onSubmit(formId: string, action: () => Promise<string>): void {
  byId<HTMLFormElement>(formId).addEventListener('submit', (event) => {
    event.preventDefault();
    status('encrypting…');
    action().then(status, (err: unknown) => status(err instanceof Error ? err.message : String(err), true));
  });
}

onSubmit('encrypt-form', async () => {
  const out = byId<HTMLTextAreaElement>('jwe');
  out.value = '';
  out.value = await encrypt(new TextEncoder().encode(byId<HTMLTextAreaElement>('plaintext').value), { cty: 'text/plain' });
  return 'text encrypted';
});

onSubmit('credential-form', async () => {
  const out = byId<HTMLTextAreaElement>('credential-jwe');
  out.value = '';
  const password = byId<HTMLInputElement>('password');
  const claims = credentialClaims(byId<HTMLInputElement>('username').value, password.value, byId<HTMLInputElement>('audience').value);
  // The password lives on only inside the JWE.
  password.value = '';
  out.value = await encrypt(claims, { typ: CREDENTIAL_JWE_TYP });
  return 'credential JWE made: valid for 2 minutes, once';
});

encryptionKey().then(
  () => status('ready'),
  (err: unknown) => status(err instanceof Error ? err.message : String(err), true),
);
