/**
 * The discovery document at `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 section 3,
 * RFC 8414 section 2): what a standard JWT library needs to verify STS's user tokens, and nothing STS does
 * not have. STS has no authorization, token or userinfo endpoint (its API is gRPC), so the document names
 * none: a client that needs those is not one STS can serve, and should fail rather than guess.
 */
import type { PublishedJwks } from '../pop/jwks-publisher.js';

export const JWKS_PATH = '/.well-known/jwks.json';
export const DISCOVERY_PATH = '/.well-known/openid-configuration';

/**
 * The claims of a user token JWT (session/user-token-view.ts signUserToken); the personal ones appear only
 * when the application may see them. A test checks a real token against this list.
 */
export const USER_TOKEN_CLAIMS = [
  'iss',
  'sub',
  'aud',
  'iat',
  'exp',
  'jti',
  'sid',
  'pref',
  'acr',
  'auth_time',
  'roles',
  'preferred_username',
  'given_name',
  'family_name',
  'email',
  'phone_number',
  'person_ref',
  'anonymised',
] as const;

/** The document for `issuer` (session.issuer), served at `baseUrl` (http.publicUrl), with today's keys. */
export function discoveryDocument(issuer: string, baseUrl: string, jwks: PublishedJwks): Record<string, unknown> {
  return {
    issuer,
    jwks_uri: `${baseUrl}${JWKS_PATH}`,
    // The uid is the subject for every application (OIDC Core section 8: "public").
    subject_types_supported: ['public'],
    // User tokens are STS's identity tokens: signed with the published signing keys' algorithms only, so a
    // verifier that takes its algorithm list from here never accepts another (RFC 8725 section 3.1).
    id_token_signing_alg_values_supported: jwks.signingAlgs,
    claims_supported: USER_TOKEN_CLAIMS,
  };
}
