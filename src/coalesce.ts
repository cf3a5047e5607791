/**
 * A task that many events ask for, each wanting a full run (a key ring reload, a republication of every
 * record): called while a run is in progress, it runs once more after that run, however many calls came
 * meanwhile. So no change is missed, and a burst of events costs at most two runs, never one per event.
 */
export function coalesced(task: () => Promise<void>, onError: (err: unknown) => void): () => void {
  let running = false;
  let again = false;
  const run = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    task()
      .catch(onError)
      .finally(() => {
        running = false;
        if (again) {
          again = false;
          run();
        }
      });
  };
  return run;
}
