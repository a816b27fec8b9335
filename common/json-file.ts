/**
 * Reading a JSON file written by a person (a config file) or by us (a run file). A parse error names the
 * file and the line and column of the problem, never its content: a config file may hold a token, and
 * JSON.parse's own message quotes the text around the error.
 */
import { RgridError } from './errors.js';

function jsonErrorOffset(text: string, message: string): number | undefined {
  const at = /at position (\d+)/.exec(message);
  if (at) return Number(at[1]);
  if (!message.startsWith('Unexpected token') || text.length > 65_536) return undefined;
  for (let end = 1; end <= text.length; end++) {
    try {
      JSON.parse(text.slice(0, end));
    } catch (err) {
      if ((err as Error).message.startsWith('Unexpected token')) return end - 1;
    }
  }
  return undefined;
}

/**
 * A JSON file's content, or an error that names the file and the line and column of the problem but
 * never quotes the content: these files hold database passwords, and JSON.parse's own message shows
 * the text around the error.
 */
export function parseJsonFile(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const offset = jsonErrorOffset(text, (err as Error).message);
    let where = '';
    if (offset !== undefined) {
      const before = text.slice(0, offset);
      where = ` at line ${before.split('\n').length}, column ${offset - before.lastIndexOf('\n')}`;
    } else if (text.trim() === '' || (err as Error).message.includes('end of JSON')) {
      where = ': it ends too early';
    }
    throw new RgridError('bad_request', `${path} is not valid JSON${where}`);
  }
}
