import { describe, expect, it } from 'vitest';
import { rewriteMetadata } from '../../bench/heavy-wheelhouse.js';

const PKG_INFO = [
  'Metadata-Version: 2.1',
  'Name: requests',
  'Version: 2.28.1',
  'License: Apache 2.0',
  '        with a continued line',
  'Requires-Dist: charset_normalizer<3,>=2',
  'Provides-Extra: socks',
  'Requires-Dist: PySocks!=1.5.7,>=1.5.6; extra == "socks"',
  '',
  'Requires-Dist: this is the description, not a field',
  '',
].join('\n');

describe('rewriteMetadata', () => {
  it('replaces the requirements and extras with the given ones, keeping the other fields and the body', () => {
    const out = rewriteMetadata(PKG_INFO, ['certifi>=2017.4.17', 'chardet<6,>=3.0.2']);
    expect(out.name).toBe('requests');
    expect(out.version).toBe('2.28.1');
    const [head, body] = [out.text.slice(0, out.text.indexOf('\n\n')), out.text.slice(out.text.indexOf('\n\n'))];
    expect(head.split('\n')).toEqual([
      'Metadata-Version: 2.1', 'Name: requests', 'Version: 2.28.1', 'License: Apache 2.0', '        with a continued line',
      'Requires-Dist: certifi>=2017.4.17', 'Requires-Dist: chardet<6,>=3.0.2',
    ]);
    expect(body).toBe('\n\nRequires-Dist: this is the description, not a field\n');
  });

  it('keeps the shipped requirements when none are given', () => {
    const out = rewriteMetadata(PKG_INFO, undefined);
    expect(out.text).toContain('Requires-Dist: charset_normalizer<3,>=2\n');
    expect(out.text).toContain('Provides-Extra: socks\n');
  });

  it('refuses metadata without a name or a version', () => {
    expect(() => rewriteMetadata('Metadata-Version: 2.1\nName: x\n', [])).toThrow(/Name or Version/);
  });
});
