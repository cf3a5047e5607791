/**
 * Baseline server: raw grpc-js with the hand-written echo service (bench/echo-def.ts), no STS code.
 * Prints {"port": N} once listening on 127.0.0.1:0.
 */
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { announce, stopOnParentExit } from './child.js';
import { type BytesMessage, EchoService } from './echo-def.js';

const server = new Server();
server.addService(EchoService, {
  echo: (call: ServerUnaryCall<BytesMessage, BytesMessage>, callback: sendUnaryData<BytesMessage>) => callback(null, { data: call.request.data }),
});
const port = await new Promise<number>((resolve, reject) => {
  server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
});
stopOnParentExit(
  () =>
    new Promise<void>((resolve) => {
      server.tryShutdown(() => resolve());
      setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 1000).unref();
    }),
);
announce({ port });
