/**
 * Shared by the benchmark's server processes: print one JSON line for the parent, and stop cleanly when the
 * parent says so (SIGTERM/SIGINT) or disappears (stdin closes), so no server outlives a benchmark run.
 */
export function announce(info: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(info) + '\n');
}

export function stopOnParentExit(stop: () => Promise<void>, hardLimitMs = 5_000): void {
  let stopping = false;
  const shutdown = (): void => {
    if (stopping) return;
    stopping = true;
    // Never hang: whatever `stop` does, the process is gone within hardLimitMs.
    setTimeout(() => process.exit(1), hardLimitMs).unref();
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`bench child: stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
