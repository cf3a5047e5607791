/**
 * The gRPC server: STS services plus standard health checking (grpc.health.v1) and server reflection, with
 * message size limits, keepalive, optional TLS/mTLS and graceful shutdown.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { Server, ServerCredentials, experimental, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Config } from '../config/defaults.js';
import { parseAddress } from '../config/load.js';
import { StartupError } from '../errors.js';
import type { Logger } from '../log.js';
import { DescriptorIndex, addReflection } from './reflection.js';

export interface ServiceBinding {
  /** Fully qualified name, for example "sts.v1.PopService": the health check key. */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}


/**
 * Certificates known at start-up, handed to grpc-js's certificate-provider credentials. Updates are
 * delivered on the next turn of the event loop: grpc-js registers its listener before it starts watching,
 * and an update delivered synchronously would be missed.
 */
class StaticCertificates implements experimental.CertificateProvider {
  constructor(
    private readonly identity: { certificate: Buffer; privateKey: Buffer } | null,
    private readonly ca: Buffer | null,
  ) {}
  addCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    setImmediate(() => listener(this.ca ? { caCertificate: this.ca } : null));
  }
  removeCaCertificateListener(): void {}
  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    setImmediate(() => listener(this.identity));
  }
  removeIdentityCertificateListener(): void {}
}

/**
 * The tls.* files, read and checked: a missing or unusable file is a config error naming the option. The
 * gRPC server and the HTTP listener (src/http) both serve with them.
 */
export function readTlsFiles(config: Config): { cert: Buffer; key: Buffer; ca: Buffer | null } {
  const read = (option: 'tls.certFile' | 'tls.keyFile' | 'tls.clientCaFile'): Buffer => {
    try {
      return readFileSync(config[option]);
    } catch (err) {
      throw new StartupError('config_invalid', `${option} ${config[option]}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  };
  const cert = read('tls.certFile');
  const key = read('tls.keyFile');
  const ca = config['tls.clientCaFile'] ? read('tls.clientCaFile') : null;
  // grpc-js parses the PEM files only when it binds; check them now so a bad file is a config error.
  try {
    createSecureContext({ cert, key, ...(ca ? { ca } : {}) });
  } catch (err) {
    throw new StartupError('config_invalid', `tls.certFile/tls.keyFile/tls.clientCaFile: not a usable PEM certificate, key and CA (${(err as Error).message})`);
  }
  return { cert, key, ca };
}

export function serverCredentials(config: Config): ServerCredentials {
  if (!config['tls.certFile']) return ServerCredentials.createInsecure();
  const { cert, key, ca } = readTlsFiles(config);
  if (ca && !config['tls.requireClientCert']) {
    // createSsl(ca, ..., false) would not even ask for a client certificate. Certificate providers ask for
    // one, verify it when offered and let clients without one through.
    // Note: grpc-js uses the first provider for the server's own certificate, whatever its declared name.
    return experimental.createCertificateProviderServerCredentials(new StaticCertificates({ certificate: cert, privateKey: key }, ca), new StaticCertificates(null, ca), false);
  }
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], config['tls.requireClientCert']);
}

export class StsGrpcServer {
  readonly health: HealthImplementation;
  private readonly server: Server;
  private readonly serviceNames: string[];
  private stopping: Promise<void> | undefined;
  private servingNow = false;

  constructor(
    private readonly config: Config,
    services: readonly ServiceBinding[],
    private readonly logger: Logger,
  ) {
    this.server = new Server({
      'grpc.max_receive_message_length': config['server.maxMessageBytes'],
      'grpc.max_send_message_length': config['server.maxMessageBytes'],
      'grpc.keepalive_time_ms': config['server.keepaliveTimeMs'],
      'grpc.keepalive_timeout_ms': config['server.keepaliveTimeoutMs'],
      'grpc.keepalive_permit_without_calls': 1,
      ...(config['server.maxConnectionAgeMs'] > 0
        ? { 'grpc.max_connection_age_ms': config['server.maxConnectionAgeMs'], 'grpc.max_connection_age_grace_ms': config['server.shutdownGraceMs'] }
        : {}),
    });
    this.serviceNames = services.map((s) => s.name);
    // Not serving until start() has bound the port and every service is registered.
    this.health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(this.serviceNames.map((n) => [n, 'NOT_SERVING'])) });
    this.health.addToServer(this.server);
    // The contract is public (it ships with the clients), but a production server need not describe itself to
    // whoever connects: server.reflection is off under the prod profile unless asked for.
    if (config['server.reflection']) addReflection(this.server, DescriptorIndex.load());
    for (const s of services) this.server.addService(s.definition, s.implementation);
  }

  /** Binds and starts serving; resolves with the bound port. */
  async start(): Promise<number> {
    const { host, port } = parseAddress(this.config['server.address']);
    const credentials = serverCredentials(this.config);
    const bound = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(`${host}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p)));
    }).catch((err: Error) => {
      throw new StartupError('listen_failed', `server.address ${this.config['server.address']}: cannot listen (${err.message})`, { cause: err });
    });
    // Certificate providers deliver on the next turn of the event loop; serve once they have.
    await new Promise((resolve) => setImmediate(resolve));
    this.setServing(true);
    return bound;
  }

  /** What grpc.health.v1 answers for the whole server ('' service): true while SERVING. */
  get serving(): boolean {
    return this.servingNow;
  }

  setServing(serving: boolean): void {
    this.servingNow = serving;
    const st = serving ? 'SERVING' : 'NOT_SERVING';
    this.health.setStatus('', st);
    for (const n of this.serviceNames) this.health.setStatus(n, st);
  }

  /**
   * Graceful shutdown: health turns NOT_SERVING (load balancers stop sending), new calls are refused,
   * in-flight calls get `server.shutdownGraceMs` to finish, then every connection is closed.
   */
  shutdown(): Promise<void> {
    this.stopping ??= new Promise<void>((resolve) => {
      this.setServing(false);
      const grace = this.config['server.shutdownGraceMs'];
      const timer = setTimeout(() => {
        this.logger.warn('shutdown grace period over; closing remaining calls', { graceMs: grace });
        this.server.forceShutdown();
        resolve();
      }, grace);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.stopping;
  }
}
