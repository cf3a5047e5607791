/**
 * The version of this STS, from its package.json: `sts --version`, the `sts_build_info` metric and backups
 * (which record the version that wrote them). The file is one directory up from src/ when run from source and
 * two up from dist/src/ when compiled or installed from the package.
 */
import { readFileSync } from 'node:fs';

function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'sts' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not this one
    }
  }
  return '0.0.0-unknown';
}

export const STS_VERSION = readVersion();
