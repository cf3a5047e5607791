/** Binding an HTTP(S) listener to a configured `host:port`, for the Prometheus listener and src/http. */
import type { Server } from 'node:http';
import { parseAddress } from '../config/load.js';
import { StartupError } from '../errors.js';

/** Listens on `address` (the value of `option`); resolves with the bound port, or fails naming the option. */
export async function listen(server: Server, address: string, option: string): Promise<number> {
  const { host, port } = parseAddress(address, option);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new StartupError('listen_failed', `${option} ${address}: cannot listen (${err.message})`, { cause: err })));
    server.listen(port, host.replace(/^\[|\]$/g, ''), () => resolve());
  });
  return (server.address() as { port: number }).port;
}
