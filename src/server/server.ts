/**
 * The gRPC server: STS services plus standard health checking (grpc.health.v1) and server reflection, with
 * message size limits, keepalive, optional TLS/mTLS and graceful shutdown.
 */
import { readFileSync } from 'node:fs';
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
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


export function serverCredentials(config: Config): ServerCredentials {
  if (!config['tls.certFile']) return ServerCredentials.createInsecure();
  const read = (option: 'tls.certFile' | 'tls.keyFile' | 'tls.clientCaFile'): Buffer => {
    try {
      return readFileSync(config[option]);
    } catch (err) {
      throw new StartupError('config_invalid', `${option} ${config[option]}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  };
  const ca = config['tls.clientCaFile'] ? read('tls.clientCaFile') : null;
  try {
    return ServerCredentials.createSsl(ca, [{ cert_chain: read('tls.certFile'), private_key: read('tls.keyFile') }], config['tls.requireClientCert']);
  } catch (err) {
    throw new StartupError('config_invalid', `tls.certFile/tls.keyFile: not a usable PEM certificate and key (${(err as Error).message})`);
  }
}

export class StsGrpcServer {
  readonly health: HealthImplementation;
  private readonly server: Server;
  private readonly serviceNames: string[];
  private stopping: Promise<void> | undefined;

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
    addReflection(this.server, DescriptorIndex.load());
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
    this.setServing(true);
    return bound;
  }

  setServing(serving: boolean): void {
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
