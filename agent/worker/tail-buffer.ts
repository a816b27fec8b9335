/**
 * Keeps the last `maxBytes` bytes of a stream of text (a script's stdout or stderr): the end of a
 * failing script's output is what explains it, and an endless printer must not fill the agent's memory.
 */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = false;

  constructor(private readonly maxBytes: number) {}

  push(text: string): void {
    const bytes = Buffer.from(text, 'utf8');
    this.chunks.push(bytes);
    this.size += bytes.length;
    // Compact only past twice the cap, so a stream of small writes costs amortized O(1) per byte.
    if (this.size > 2 * this.maxBytes) this.compact();
  }

  private compact(): void {
    if (this.size <= this.maxBytes) return;
    const all = Buffer.concat(this.chunks);
    const kept = all.subarray(all.length - this.maxBytes);
    this.chunks = [Buffer.from(kept)];
    this.size = kept.length;
    this.dropped = true;
  }

  get truncated(): boolean {
    return this.dropped || this.size > this.maxBytes;
  }

  text(): string {
    this.compact();
    return Buffer.concat(this.chunks).toString('utf8');
  }
}
