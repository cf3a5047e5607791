/**
 * Shared by the benchmark's server processes: print one JSON line for the parent, and stop cleanly when the
 * parent says so (SIGTERM/SIGINT) or disappears (stdin closes), so no server outlives a benchmark run.
 *
 * The parent may also send commands, one JSON line each on stdin ({"id", "cmd", "arg"}); the answer is one
 * JSON line on stdout ({"reply": id, "result"} or {"reply": id, "error"}). The STS server uses this for memory
 * readings and CPU profiles of the measured window (bench/sts-server.ts).
 */
export function announce(info: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(info) + '\n');
}

/** Answers one command from the parent. */
export type CommandHandler = (cmd: string, arg: unknown) => Promise<unknown>;

export function stopOnParentExit(stop: () => Promise<void>, hardLimitMs = 5_000, onCommand?: CommandHandler): void {
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
  let pending = '';
  process.stdin.setEncoding('utf8').on('data', (d: string) => {
    if (!onCommand) return;
    pending += d;
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let msg: { id: number; cmd: string; arg?: unknown };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      onCommand(msg.cmd, msg.arg).then(
        (result) => process.stdout.write(JSON.stringify({ reply: msg.id, result }) + '\n'),
        (err: unknown) => process.stdout.write(JSON.stringify({ reply: msg.id, error: err instanceof Error ? err.message : String(err) }) + '\n'),
      );
    }
  });
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
