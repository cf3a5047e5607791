/**
 * The raw grpc-js echo service used as the baseline: one unary method whose request and response are the
 * same protobuf message with a single `bytes data = 1` field, (de)serialized by hand. It measures what
 * grpc-js itself costs on this machine, so the STS numbers can be read as a ratio to it.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';

export interface BytesMessage {
  data: Buffer;
}

/** Encodes `{data}` as protobuf: tag 0x0a (field 1, length-delimited), varint length, bytes. */
export function encodeBytesMessage(m: BytesMessage): Buffer {
  if (m.data.length === 0) return Buffer.alloc(0);
  const len: number[] = [];
  let n = m.data.length;
  while (n > 0x7f) {
    len.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  len.push(n);
  return Buffer.concat([Buffer.from([0x0a, ...len]), m.data]);
}

/** Decodes the message, skipping unknown fields; the last `data` field wins, as in protobuf. */
export function decodeBytesMessage(buf: Buffer): BytesMessage {
  let data: Buffer = Buffer.alloc(0);
  let i = 0;
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++]!;
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
      shift += 7;
      if (shift > 49) throw new Error('varint too long');
    }
  };
  while (i < buf.length) {
    const tag = varint();
    const wire = tag & 7;
    if (wire === 2) {
      const len = varint();
      if (i + len > buf.length) throw new Error('truncated field');
      if (tag >>> 3 === 1) data = buf.subarray(i, i + len);
      i += len;
    } else if (wire === 0) varint();
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
  return { data };
}

export const EchoService = {
  echo: {
    path: '/bench.v1.EchoService/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeBytesMessage,
    requestDeserialize: decodeBytesMessage,
    responseSerialize: encodeBytesMessage,
    responseDeserialize: decodeBytesMessage,
  },
} satisfies ServiceDefinition;
