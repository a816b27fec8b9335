/**
 * A one-line progress bar on stderr for large uploads, redrawn at most every 100 ms. Only on a terminal:
 * piped output (CI, --json consumers) gets no carriage-return noise.
 */
export interface Progress {
  tick: (bytes: number) => void;
  done: () => void;
}

export function formatBar(done: number, total: number, width = 30): string {
  const ratio = total > 0 ? Math.min(done / total, 1) : 1;
  const filled = Math.round(ratio * width);
  const mb = (n: number): string => (n / (1024 * 1024)).toFixed(1);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(ratio * 100)}% ${mb(done)}/${mb(total)} MB`;
}

export function createProgress(enabled: boolean, total: number, label: string, out: NodeJS.WriteStream = process.stderr): Progress {
  if (!enabled) return { tick: () => undefined, done: () => undefined };
  let sent = 0;
  let last = 0;
  const draw = (): void => void out.write(`\r${label} ${formatBar(sent, total)}`);
  return {
    tick(bytes) {
      sent += bytes;
      const now = Date.now();
      if (now - last >= 100) {
        last = now;
        draw();
      }
    },
    done() {
      draw();
      out.write('\n');
    },
  };
}
