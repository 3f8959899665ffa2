// Option validation for the public API: one message form for every check,
// "Expected <what> for <option> but received <value>", thrown before anything crosses into C++.
import { inspect } from 'node:util';

/** A short printable form of a received value (strings quoted, typed arrays by type and length). */
export function describe(value: unknown): string {
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    return `${value.constructor.name} of length ${(value as unknown as { length: number }).length}`;
  }
  return inspect(value, { depth: 0, breakLength: Infinity, maxStringLength: 60, maxArrayLength: 5 });
}

function message(what: string, option: string, value: unknown): string {
  return `Expected ${what} for ${option} but received ${describe(value)}`;
}

/** An integer in [min, max]: TypeError when not an integer, RangeError when outside. */
export function integer(value: unknown, option: string, min: number, max: number): number {
  const what = `an integer between ${min} and ${max}`;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(message(what, option, value));
  if (value < min || value > max) throw new RangeError(message(what, option, value));
  return value;
}

/** One of a fixed set of strings: TypeError when not a string, RangeError when not in the set. */
export function oneOf<T extends string>(value: unknown, option: string, allowed: readonly T[]): T {
  const what = allowed.map((a) => `'${a}'`).join(', ').replace(/, ([^,]*)$/, ' or $1');
  if (typeof value !== 'string') throw new TypeError(message(what, option, value));
  if (!allowed.includes(value as T)) throw new RangeError(message(what, option, value));
  return value as T;
}

/** A number in [min, max] (or (min, max] when minExclusive): TypeError when not a number, RangeError when outside. */
export function number(value: unknown, option: string, min: number, max: number, minExclusive = false): number {
  const what = minExclusive ? `a number > ${min} and <= ${max}` : `a number between ${min} and ${max}`;
  if (typeof value !== 'number' || Number.isNaN(value)) throw new TypeError(message(what, option, value));
  if (!(minExclusive ? value > min : value >= min) || !(value <= max)) throw new RangeError(message(what, option, value));
  return value;
}

/** A number written as text (a command-line flag): the same checks and messages as number(). */
export function numberText(text: string, option: string, min: number, max: number): number {
  return number(text.trim() === '' || Number.isNaN(Number(text)) ? text : Number(text), option, min, max);
}

/** An integer written as text (a command-line flag): the same checks and messages as integer(). */
export function integerText(text: string, option: string, min: number, max: number): number {
  return integer(/^-?\d+$/.test(text.trim()) ? Number(text) : text, option, min, max);
}

/** A path: a non-empty string (TypeError otherwise); whether it exists is for its reader to say. */
export function filePath(value: unknown, option: string): string {
  if (typeof value !== 'string' || value === '') throw new TypeError(message('a file path', option, value));
  return value;
}

export function boolean(value: unknown, option: string): boolean {
  if (typeof value !== 'boolean') throw new TypeError(message('a boolean', option, value));
  return value;
}

/** A Float32Array of an exact length: TypeError for another type, RangeError for another length. */
export function float32(value: unknown, option: string, length: number): Float32Array {
  if (!(value instanceof Float32Array)) throw new TypeError(message('a Float32Array', option, value));
  if (value.length !== length) throw new RangeError(message(`a Float32Array of length ${length}`, option, value));
  return value;
}

/** A plain options object (or undefined → {}). */
export function options(value: unknown, option: string): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(message('an object', option, value));
  }
  return value as Record<string, unknown>;
}
