/**
 * SessionService: grpc-free domain functions over the directory, the session store and the keys, in four
 * groups that share the helpers of session-common.ts: application sessions (app-sessions.ts), user sessions
 * (user-sessions.ts), handing a session to another application (handover.ts) and directory administration
 * (directory-admin.ts).
 */
import { appSessions } from './app-sessions.js';
import { directoryAdmin } from './directory-admin.js';
import { handover } from './handover.js';
import { type SessionHandlers, type SessionServiceDeps, sessionKit } from './session-common.js';
import { userSessions } from './user-sessions.js';

export type { SessionPolicy, SessionServiceDeps, ThirdPartyVerifier } from './session-common.js';

export function sessionService(deps: SessionServiceDeps): SessionHandlers {
  const k = sessionKit(deps);
  return { ...appSessions(k), ...userSessions(k), ...handover(k), ...directoryAdmin(k) };
}
