/** Network helpers for tests. */
import { type AddressInfo, createServer } from 'node:net';

/** A TCP port on 127.0.0.1 that nothing listened on a moment ago (for "nothing listens here" and restarts). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
