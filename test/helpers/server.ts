/**
 * Starts a real STS on 127.0.0.1:0 with a temporary data directory, and generated clients for it.
 * Every test closes its clients and server afterwards (see `stop`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, type Client } from '@grpc/grpc-js';
import { type RunningSts, startSts } from '../../src/app.js';
import type { Clock } from '../../src/clock.js';
import type { Config, OptionName } from '../../src/config/defaults.js';
import { loadConfig } from '../../src/config/load.js';
import { PopServiceClient } from '../../src/gen/sts/v1/pop.js';
import { SecretServiceClient } from '../../src/gen/sts/v1/secret.js';
import { SessionServiceClient } from '../../src/gen/sts/v1/session.js';
import { type Logger, createLogger, silentLogger } from '../../src/log.js';

const MIN = 60_000;
/**
 * Short, readable key rotation policies for tests with a manual clock: every kind valid 60 min, staged 10
 * min before, decrypt-only for 30 min after; one key ahead; tokens shorter than the legacy window.
 */
export const FAST_ROTATION: Partial<Record<OptionName, number | string>> = {
  ...Object.fromEntries(
    (['encryption', 'signing', 'secret'] as const).flatMap((k) => [
      [`pop.${k}.validityMs`, 60 * MIN],
      [`pop.${k}.stagingLeadMs`, 10 * MIN],
      [`pop.${k}.legacyWindowMs`, 30 * MIN],
      [`pop.${k}.minimumKeys`, 1],
    ]),
  ),
  'pop.jwksMaxAgeMs': MIN,
  'session.userTokenMaxLifetimeMs': 30 * MIN,
  'session.userTokenIdleTimeoutMs': 10 * MIN,
};

export function tempDir(prefix = 'sts-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function testConfig(dataDir: string, overrides: Partial<Record<OptionName, string | number | boolean>> = {}): Config {
  return loadConfig({ env: {}, overrides: { 'server.address': '127.0.0.1:0', 'http.address': '127.0.0.1:0', dataDir, 'server.shutdownGraceMs': 2000, ...overrides } });
}

export interface TestSts {
  sts: RunningSts;
  address: string;
  dataDir: string;
  pop: PopServiceClient;
  session: SessionServiceClient;
  secret: SecretServiceClient;
  /** Lines logged by the server (JSON), for assertions on logs. */
  logs: string[];
  /** Closes the clients and the server; keeps the data directory unless `removeData`. */
  stop(removeData?: boolean): Promise<void>;
}

export interface StartTestOptions {
  dataDir?: string;
  clock?: Clock;
  overrides?: Partial<Record<OptionName, string | number | boolean>>;
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
}

export async function startTestSts(options: StartTestOptions = {}): Promise<TestSts> {
  const dataDir = options.dataDir ?? tempDir();
  const logs: string[] = [];
  const logger = options.logger ?? createLogger('debug', (l) => logs.push(l));
  const sts = await startSts({ config: testConfig(dataDir, options.overrides), env: options.env ?? {}, logger, ...(options.clock ? { clock: options.clock } : {}) });
  const address = `127.0.0.1:${sts.port}`;
  const creds = credentials.createInsecure();
  const clients: Client[] = [];
  const make = <T extends Client>(C: new (addr: string, c: typeof creds) => T): T => {
    const c = new C(address, creds);
    clients.push(c);
    return c;
  };
  return {
    sts,
    address,
    dataDir,
    pop: make(PopServiceClient),
    session: make(SessionServiceClient),
    secret: make(SecretServiceClient),
    logs,
    async stop(removeData = false) {
      for (const c of clients) c.close();
      await sts.close();
      if (removeData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export { silentLogger };
