/**
 * The benchmark's test data, made once per STS deployment by bench/setup.ts through the admin RPCs and read
 * by every load process (--fixture <file>). Only what the scenarios need to issue and check their calls.
 */
import { readFileSync } from 'node:fs';
import type { JWK } from 'jose';

export interface AppFixture {
  id: string;
  secret: string;
  /** An application token (LogonApplication), the bearer of the session and secret RPCs. */
  token: string;
}

export interface SessionFixture {
  /** User token id of a real stored session. */
  tokenId: string;
  uid: string;
}

export interface Fixture {
  /**
   * `main`: trusted (Decrypt/Sign), personal fields allowed, registered as the resource server "bench-rs".
   * `sso`: the application user tickets are handed over to.
   */
  apps: { main: AppFixture; sso: AppFixture };
  /** Users with a password (LogonUser) and roles in both applications. */
  users: { uid: string; username: string; password: string }[];
  /** Sessions of `users`, made with LogonUser (or, for the scale part, inserted through the store). */
  sessions: SessionFixture[];
  /** Issuer of the identity provider registered with an inline JWKS. */
  issuer: string;
  /** Audience the resource server may present. */
  audience: string;
  /** Pre-signed ES256 subject tokens, one per subject; their secrets exist already (steady state). */
  subjects: { token: string; subject: string }[];
  /** Private key of the resource server (ECDH-ES+A256KW), to open a released secret in the sanity check. */
  rsPrivateJwk: JWK;
  /** Users without a password (roles in the main application) that the scale part's sessions belong to. */
  seedUids: string[];
}

export const MAIN_APP = 'bench-app';
export const SSO_APP = 'bench-sso';
export const RESOURCE_SERVER = 'bench-rs';

export function readFixture(file: string): Fixture {
  return JSON.parse(readFileSync(file, 'utf8')) as Fixture;
}
