/** Promise form of a generated unary client method, with optional bearer token and deadline. */
import { Metadata, type ServiceError, type CallOptions } from '@grpc/grpc-js';

type UnaryMethod<Req, Res> = (req: Req, metadata: Metadata, options: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => unknown;

export function call<Req, Res>(method: UnaryMethod<Req, Res>, self: unknown, req: Req, bearer?: string, deadlineMs = 20_000): Promise<Res> {
  const md = new Metadata();
  if (bearer) md.set('authorization', `Bearer ${bearer}`);
  return new Promise<Res>((resolve, reject) => {
    method.call(self, req, md, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Runs a call expected to fail and returns its error (fails the test if it succeeds). */
export async function callError(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}
