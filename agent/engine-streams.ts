/**
 * A container's attach stream, demultiplexed into text: stdout and stderr as UTF-8 (a code point split
 * across two frames is rejoined). The promise settles when the stream ends, closes or fails, whichever
 * comes first, so a caller never waits on an engine that drops the connection without an end.
 */
import { PassThrough } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type Docker from 'dockerode';

export type StreamName = 'stdout' | 'stderr';

export function demuxText(
  stream: NodeJS.ReadWriteStream, docker: Docker, onText: (name: StreamName, text: string, final: boolean) => void,
): Promise<void> {
  const make = (name: StreamName): PassThrough => {
    const decoder = new StringDecoder('utf8');
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => {
      const text = decoder.write(chunk);
      if (text) onText(name, text, false);
    });
    sink.on('end', () => onText(name, decoder.end(), true));
    return sink;
  };
  const out = make('stdout');
  const err = make('stderr');
  docker.modem.demuxStream(stream, out, err);
  return new Promise((resolve) => {
    const finish = (): void => {
      out.end();
      err.end();
      resolve();
    };
    stream.on('end', finish);
    stream.on('close', finish);
    stream.on('error', finish);
  });
}
