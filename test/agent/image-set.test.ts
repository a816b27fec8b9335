import { describe, expect, it } from 'vitest';
import { ImageSet, MAX_GONE } from '../../agent/builder/image-set.js';

const id = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;
const event = (Action: string, ID: unknown) => ({ Action, Actor: { ID } });

describe('the image set kept from engine events', () => {
  it('a resync lists what is present; everything else is unknown (asked of the engine)', () => {
    const set = new ImageSet();
    set.resync([id(1), id(2), 'not-an-id', 42]);
    expect(set.state(id(1))).toBe('present');
    expect(set.state(id(3))).toBe('unknown');
    expect(set.size).toBe(2);
  });

  it('a delete event makes an ID gone; untag does not; a later tag of the same ID brings it back', () => {
    const set = new ImageSet();
    set.resync([id(1)]);
    set.apply(event('untag', id(1)));
    expect(set.state(id(1))).toBe('present');
    set.apply(event('delete', id(1)));
    expect(set.state(id(1))).toBe('gone');
    set.apply(event('tag', id(1)));
    expect(set.state(id(1))).toBe('present');
  });

  it('a pull names a reference, not an ID: deletions known before become unknown again', () => {
    const set = new ImageSet();
    set.resync([id(1)]);
    set.apply(event('delete', id(1)));
    set.apply(event('pull', 'python:3.11-slim'));
    expect(set.state(id(1))).toBe('unknown');
  });

  it('an engine answer is learnt, but "exists" never over a deletion that arrived meanwhile', () => {
    const set = new ImageSet();
    set.resync([]);
    set.learn(id(5), true);
    expect(set.state(id(5))).toBe('present');
    set.apply(event('delete', id(6)));
    set.learn(id(6), true);
    expect(set.state(id(6))).toBe('gone');
    set.learn(id(7), false);
    expect(set.state(id(7))).toBe('gone');
  });

  it('forget (a create said "no such image") marks the ID gone; a resync starts over', () => {
    const set = new ImageSet();
    set.resync([id(1)]);
    set.forget(id(1));
    expect(set.state(id(1))).toBe('gone');
    set.resync([id(1)]);
    expect(set.state(id(1))).toBe('present');
  });

  it('ignores what is not an image ID of the one definition, and unparseable events', () => {
    const set = new ImageSet();
    set.resync([]);
    for (const bad of ['sha256:XYZ', `${id(1)}/../x`, id(1).toUpperCase(), null, { id: 1 }]) {
      set.apply(event('tag', bad));
      set.apply(event('delete', bad));
      if (typeof bad === 'string') set.forget(bad);
    }
    set.apply({});
    set.apply({ Action: 7 });
    expect(set.size).toBe(0);
    expect(set.state(id(1))).toBe('unknown');
  });

  it('remembers a bounded number of deletions (the oldest forgotten becomes unknown)', () => {
    const set = new ImageSet();
    set.resync([]);
    for (let n = 0; n <= MAX_GONE; n++) set.apply(event('delete', id(n)));
    expect(set.state(id(0))).toBe('unknown');
    expect(set.state(id(MAX_GONE))).toBe('gone');
  });
});
