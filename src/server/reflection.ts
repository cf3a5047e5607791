/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), served from the descriptor sets that buf builds.
 *
 * Why not @grpc/reflection: it re-derives descriptors from a proto-loader package definition, and that
 * round trip loses information (well-known type references come out as "*.google.protobuf.Timestamp" and
 * map entries get names grpcurl rejects). Serving buf's own FileDescriptorProtos avoids both and keeps the
 * comments, so `grpcurl describe` shows the documentation of the contract.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { type Server, type ServerDuplexStream, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { fromBinary, toBinary, createFileRegistry, type DescFile, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';

/** Descriptor sets written by `npm run generate`: the STS contract and grpc.health.v1. */
const DESCRIPTOR_SETS = [new URL('../gen/sts.binpb', import.meta.url), new URL('../gen/health.binpb', import.meta.url)];

interface ReflectionRequest {
  host?: string;
  file_by_filename?: string;
  file_containing_symbol?: string;
  file_containing_extension?: unknown;
  all_extension_numbers_of_type?: string;
  list_services?: string;
  message_request?: string;
}

export class DescriptorIndex {
  private readonly registry: FileRegistry;
  private readonly encoded = new Map<string, Buffer>();
  readonly serviceNames: string[];

  constructor(descriptorSet: Buffer) {
    // Concatenated serialized FileDescriptorSets parse as one set (repeated fields merge on the wire).
    const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
    this.registry = createFileRegistry(set);
    for (const file of set.file) this.encoded.set(file.name, Buffer.from(toBinary(FileDescriptorProtoSchema, file)));
    this.serviceNames = [...this.registry].filter((d) => d.kind === 'service').map((d) => d.typeName).sort();
  }

  static load(extra: Buffer[] = []): DescriptorIndex {
    return new DescriptorIndex(Buffer.concat([...DESCRIPTOR_SETS.map((u) => readFileSync(u)), ...extra]));
  }

  /** The file and everything it imports, each serialized once, the requested file first. */
  private withDependencies(file: DescFile): Buffer[] {
    const seen = new Set<string>();
    const out: Buffer[] = [];
    const visit = (f: DescFile): void => {
      if (seen.has(f.proto.name)) return;
      seen.add(f.proto.name);
      const bytes = this.encoded.get(f.proto.name);
      if (bytes) out.push(bytes);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return out;
  }

  fileByName(name: string): Buffer[] | undefined {
    const file = this.registry.getFile(name) ?? this.registry.getFile(name.replace(/\.proto$/, ''));
    return file ? this.withDependencies(file) : undefined;
  }

  fileContainingSymbol(symbol: string): Buffer[] | undefined {
    const direct = this.registry.get(symbol);
    if (direct && 'file' in direct) return this.withDependencies(direct.file);
    // Methods and fields are addressed as <parent>.<name>.
    const parentName = symbol.slice(0, symbol.lastIndexOf('.'));
    const parent = parentName ? this.registry.get(parentName) : undefined;
    return parent && 'file' in parent ? this.withDependencies(parent.file) : undefined;
  }
}

function handle(index: DescriptorIndex, req: ReflectionRequest): Record<string, unknown> {
  const base = { valid_host: req.host ?? '', original_request: req };
  const files = (bytes: Buffer[] | undefined, what: string) =>
    bytes
      ? { ...base, file_descriptor_response: { file_descriptor_proto: bytes } }
      : { ...base, error_response: { error_code: status.NOT_FOUND, error_message: `${what} not found` } };
  if (req.list_services !== undefined) {
    return { ...base, list_services_response: { service: index.serviceNames.map((name) => ({ name })) } };
  }
  if (req.file_by_filename !== undefined) return files(index.fileByName(req.file_by_filename), `file ${req.file_by_filename}`);
  if (req.file_containing_symbol !== undefined) return files(index.fileContainingSymbol(req.file_containing_symbol), `symbol ${req.file_containing_symbol}`);
  if (req.all_extension_numbers_of_type !== undefined) {
    return { ...base, error_response: { error_code: status.NOT_FOUND, error_message: 'no extensions are defined' } };
  }
  return { ...base, error_response: { error_code: status.UNIMPLEMENTED, error_message: 'request kind not supported' } };
}

/** Adds grpc.reflection.v1 and v1alpha ServerReflection to the server. */
export function addReflection(server: Server, index: DescriptorIndex): void {
  const require = createRequire(import.meta.url);
  const protoRoot = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
  for (const version of ['v1', 'v1alpha']) {
    const def = loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [protoRoot], oneofs: true, keepCase: true });
    const pkg = loadPackageDefinition(def) as GrpcObject;
    const ctor = ((pkg.grpc as GrpcObject).reflection as GrpcObject)[version] as GrpcObject;
    const service = (ctor.ServerReflection as ServiceClientConstructor).service;
    server.addService(service, {
      ServerReflectionInfo: (call: ServerDuplexStream<ReflectionRequest, unknown>) => {
        call.on('data', (req: ReflectionRequest) => call.write(handle(index, req)));
        call.on('end', () => call.end());
        call.on('error', () => call.end());
      },
    });
  }
}
