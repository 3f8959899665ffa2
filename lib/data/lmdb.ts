// LMDB datasets in the layout every scene-text-recognition project uses (the STR layout:
// `num-samples` → the count as ASCII digits, `image-%09d` → an encoded image, `label-%09d` → the
// word in UTF-8, indices from 1), read and written by a small implementation of LMDB's on-disk
// format in TypeScript: LmdbFile reads any LMDB 0.9 file, LmdbSource serves one as a DataSource,
// LmdbWriter and writeLmdb write one (what `safl synth --out x.lmdb` makes).
//
// Note [why not the lmdb package]: the datasets users have (MJSynth, SynthText, the evaluation
// sets) were written by Python's lmdb, which bundles LMDB 0.9: data format version 1. The npm
// package `lmdb` (lmdb-js) ships binaries built from LMDB's 1.0 branch, data format version 2,
// whose page header is 8 bytes longer: it cannot read those files (version 3.5 crashes the process
// on one, opened read-only), and Python cannot read what it writes. Reading format 1 with it needs
// a build from source with a C compiler (`--build-from-source --use_data_v1=true`) on every
// user's machine. A dataset is only ever read by key or written once in key order, which takes a
// few hundred lines of TypeScript and no native code, with no lock file beside a dataset that may
// sit on read-only storage.
//
// Note [the LMDB 0.9 file format] (64-bit builds, little-endian; liblmdb's mdb.c is the reference):
// the file is an array of pages of `psize` bytes. Every page starts with a 16-byte header: the page
// number (u64), a pad (u16), flags (u16: 1 branch, 2 leaf, 4 overflow, 8 meta), then either
// lower/upper (u16 each: the end of the pointer array and the start of the nodes) or, on an
// overflow page, the number of pages of the run (u32). Pages 0 and 1 are meta pages; the one with
// the larger transaction id is current. A meta (after the header) holds magic 0xBEEFC0DE, the data
// format version (1), an address and the map size (u64 each), two database records of 48 bytes
// (the free-page DB, whose pad field holds psize, and the main DB: pad u32, flags u16, depth u16,
// branch, leaf and overflow page counts, entries and root page, u64 each; root ~0 when empty),
// the last page used and the transaction id (u64 each). A branch or leaf page has u16 pointers
// (offsets from the page start) after the header, sorted by key, to nodes packed down from the
// page end: lo u16, hi u16, flags u16, key size u16, the key, then on a leaf the value. On a leaf
// lo|hi<<16 is the value size; with flag 1 (big data) the value lives on overflow pages whose first
// page number (u64) stands in its place. On a branch lo|hi<<16|flags<<32 is the child's page number,
// and node 0's key is not compared (it stands for every key below node 1's). Keys compare as bytes,
// a shorter key first when one is a prefix of the other.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { DataSource, Sample } from './source.js';
import { describe } from '../validate.js';
import * as check from '../validate.js';

const PAGE_HEADER = 16;
const NODE_HEADER = 8;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_OVERFLOW = 0x04;
const P_META = 0x08;
const F_BIGDATA = 0x01;
const MDB_INTEGERKEY = 0x08;
const MAGIC = 0xbeefc0de;
const DATA_VERSION = 1;
const NO_PAGE = 0xffffffffffffffffn;
/** liblmdb's MDB_MAXKEYSIZE. */
const MAX_KEY_SIZE = 511;
/** What the writer uses: the page size of the machines LMDB datasets are made on. */
const WRITE_PAGE_SIZE = 4096;
/** Pages kept in memory per open file (the upper levels of the tree stay there). */
const CACHED_PAGES = 1024;

/** One database record of a meta page. */
interface DbRecord {
  flags: number;
  depth: number;
  entries: bigint;
  root: bigint;
}

function corrupt(file: string, what: string): Error {
  return new Error(`${file}: not a valid LMDB file (${what})`);
}

/**
 * A read-only LMDB 0.9 file (data format 1): values by key from the main database. Reads pages on
 * demand with positional reads, so files of any size open at once, and several reads may run at
 * the same time. Note [the LMDB 0.9 file format].
 */
export class LmdbFile {
  /** The data file (`…/data.mdb`, or a file passed as it is). */
  readonly file: string;
  /** Entries in the main database. */
  readonly entries: number;
  #handle: FileHandle;
  #pageSize: number;
  #pageCount: number;
  #main: DbRecord;
  #cache = new Map<number, Promise<Buffer>>();
  #closed = false;

  private constructor(file: string, handle: FileHandle, pageSize: number, pageCount: number, main: DbRecord) {
    this.file = file;
    this.#handle = handle;
    this.#pageSize = pageSize;
    this.#pageCount = pageCount;
    this.#main = main;
    this.entries = Number(main.entries);
  }

  /**
   * Opens an LMDB environment: a directory holding `data.mdb` (as Python's lmdb writes by default)
   * or a data file itself.
   * @throws Error naming the path: missing, a directory without data.mdb, not an LMDB file, an
   *   LMDB file of another data format version, or a database kind safl does not read.
   */
  static async open(location: string): Promise<LmdbFile> {
    const info = await stat(location).catch(() => undefined);
    if (info === undefined) throw new Error(`${location}: no such file or directory`);
    const file = info.isDirectory() ? path.join(location, 'data.mdb') : location;
    if (info.isDirectory() && !existsSync(file)) throw new Error(`${location}: no data.mdb in this directory (not an LMDB environment)`);
    const handle = await open(file, 'r');
    try {
      const size = (await handle.stat()).size;
      const first = Buffer.alloc(PAGE_HEADER + 136);
      const { bytesRead } = await handle.read(first, 0, first.length, 0);
      if (bytesRead < first.length) throw corrupt(file, `${size} bytes is too short`);
      const meta0 = readMeta(first, file);
      const pageSize = meta0.pageSize;
      const second = Buffer.alloc(PAGE_HEADER + 136);
      if ((await handle.read(second, 0, second.length, pageSize)).bytesRead < second.length) {
        throw corrupt(file, 'the second meta page is missing');
      }
      const meta1 = readMeta(second, file);
      const current = meta1.txnid > meta0.txnid ? meta1 : meta0;
      const main = current.main;
      if (main.flags !== 0) {
        // Integer or reversed keys, sorted duplicates: other key orders and value kinds, which the
        // STR layout never uses.
        throw new Error(`${file}: the main database has flags 0x${main.flags.toString(16)}; safl reads plain key → value databases`);
      }
      return new LmdbFile(file, handle, pageSize, Math.floor(size / pageSize), main);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** The value stored under `key`, or undefined. */
  async get(key: string | Uint8Array): Promise<Buffer | undefined> {
    const wanted = typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
    if (this.#main.root === NO_PAGE) return undefined;
    let pgno = this.#pgno(this.#main.root, 'the root');
    for (let level = 0; level < this.#main.depth; level++) {
      const page = await this.#page(pgno);
      const flags = page.readUInt16LE(10);
      const count = this.#nodeCount(page, pgno);
      if (flags & P_BRANCH) {
        // The last node whose key is at most the wanted key; node 0 stands for everything below node 1.
        let lo = 1;
        let hi = count - 1;
        let found = 0;
        while (lo <= hi) {
          const mid = (lo + hi) >> 1;
          if (Buffer.compare(this.#nodeKey(page, pgno, mid), wanted) <= 0) {
            found = mid;
            lo = mid + 1;
          } else {
            hi = mid - 1;
          }
        }
        const node = this.#nodeOffset(page, pgno, found);
        const child = page.readUInt16LE(node) + page.readUInt16LE(node + 2) * 0x10000 + page.readUInt16LE(node + 4) * 0x100000000;
        pgno = this.#pgno(BigInt(child), `a child of page ${pgno}`);
        continue;
      }
      if (!(flags & P_LEAF)) throw corrupt(this.file, `page ${pgno} is neither a branch nor a leaf (flags 0x${flags.toString(16)})`);
      let lo = 0;
      let hi = count - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const order = Buffer.compare(this.#nodeKey(page, pgno, mid), wanted);
        if (order === 0) return this.#value(page, pgno, mid);
        if (order < 0) lo = mid + 1;
        else hi = mid - 1;
      }
      return undefined;
    }
    throw corrupt(this.file, `no leaf within the tree's depth of ${this.#main.depth}`);
  }

  /** Closes the file; later reads fail. Calling it again does nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cache.clear();
    await this.#handle.close();
  }

  #pgno(value: bigint, what: string): number {
    if (value >= BigInt(this.#pageCount)) throw corrupt(this.file, `${what} is page ${value}, past the end of the file`);
    return Number(value);
  }

  #page(pgno: number): Promise<Buffer> {
    let page = this.#cache.get(pgno);
    if (page !== undefined) {
      this.#cache.delete(pgno); // most recently used last
    } else {
      const buffer = Buffer.alloc(this.#pageSize);
      page = this.#handle.read(buffer, 0, this.#pageSize, pgno * this.#pageSize).then(() => buffer);
      page.catch(() => this.#cache.delete(pgno));
      if (this.#cache.size >= CACHED_PAGES) this.#cache.delete(this.#cache.keys().next().value as number);
    }
    this.#cache.set(pgno, page);
    return page;
  }

  #nodeCount(page: Buffer, pgno: number): number {
    const lower = page.readUInt16LE(12);
    const upper = page.readUInt16LE(14);
    if (lower <= PAGE_HEADER || lower > upper || upper > this.#pageSize || (lower - PAGE_HEADER) % 2 !== 0) {
      throw corrupt(this.file, `page ${pgno} has bounds ${lower}…${upper}`);
    }
    return (lower - PAGE_HEADER) >> 1;
  }

  #nodeOffset(page: Buffer, pgno: number, index: number): number {
    const offset = page.readUInt16LE(PAGE_HEADER + 2 * index);
    if (offset < PAGE_HEADER || offset + NODE_HEADER > this.#pageSize) throw corrupt(this.file, `node ${index} of page ${pgno} is out of the page`);
    return offset;
  }

  #nodeKey(page: Buffer, pgno: number, index: number): Buffer {
    const node = this.#nodeOffset(page, pgno, index);
    const keySize = page.readUInt16LE(node + 6);
    if (node + NODE_HEADER + keySize > this.#pageSize) throw corrupt(this.file, `the key of node ${index} of page ${pgno} is out of the page`);
    return page.subarray(node + NODE_HEADER, node + NODE_HEADER + keySize);
  }

  async #value(page: Buffer, pgno: number, index: number): Promise<Buffer> {
    const node = this.#nodeOffset(page, pgno, index);
    const size = page.readUInt16LE(node) + page.readUInt16LE(node + 2) * 0x10000;
    const flags = page.readUInt16LE(node + 4);
    const start = node + NODE_HEADER + page.readUInt16LE(node + 6);
    if (flags & ~F_BIGDATA) throw new Error(`${this.file}: node ${index} of page ${pgno} holds a sub-database (flags 0x${flags.toString(16)}); safl reads plain values`);
    if (!(flags & F_BIGDATA)) {
      if (start + size > this.#pageSize) throw corrupt(this.file, `the value of node ${index} of page ${pgno} is out of the page`);
      return Buffer.from(page.subarray(start, start + size));
    }
    if (start + 8 > this.#pageSize) throw corrupt(this.file, `the value of node ${index} of page ${pgno} is out of the page`);
    // Overflow pages are read in one go with their header, and not cached: each is read once.
    const first = this.#pgno(page.readBigUInt64LE(start), `the overflow of node ${index} of page ${pgno}`);
    const run = Buffer.alloc(PAGE_HEADER + size);
    const { bytesRead } = await this.#handle.read(run, 0, run.length, first * this.#pageSize);
    const pages = run.readUInt32LE(12);
    if (bytesRead < run.length || !(run.readUInt16LE(10) & P_OVERFLOW) || PAGE_HEADER + size > pages * this.#pageSize) {
      throw corrupt(this.file, `overflow page ${first} does not hold ${size} bytes`);
    }
    return run.subarray(PAGE_HEADER);
  }
}

/** Reads a meta page's header and record (the first 152 bytes of page 0 or 1). */
function readMeta(bytes: Buffer, file: string): { pageSize: number; main: DbRecord; txnid: bigint } {
  if (bytes.readUInt32LE(PAGE_HEADER) !== MAGIC) {
    // LMDB 1.0 (data format 2, as lmdb-js writes) has a 24-byte page header.
    if (bytes.readUInt32LE(24) === MAGIC) {
      throw new Error(
        `${file}: LMDB data format version ${bytes.readUInt32LE(28)} (LMDB 1.0, as the npm package lmdb writes); ` +
          "safl reads format 1, the format of LMDB 0.9 that Python's lmdb and the STR dataset tools write",
      );
    }
    throw corrupt(file, 'no LMDB magic number');
  }
  if (!(bytes.readUInt16LE(10) & P_META)) throw corrupt(file, 'no meta page');
  const version = bytes.readUInt32LE(PAGE_HEADER + 4);
  if (version !== DATA_VERSION) throw new Error(`${file}: LMDB data format version ${version}; safl reads format 1 (LMDB 0.9)`);
  const pageSize = bytes.readUInt32LE(PAGE_HEADER + 24);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) throw corrupt(file, `page size ${pageSize}`);
  const db = PAGE_HEADER + 24 + 48;
  return {
    pageSize,
    main: {
      flags: bytes.readUInt16LE(db + 4),
      depth: bytes.readUInt16LE(db + 6),
      entries: bytes.readBigUInt64LE(db + 32),
      root: bytes.readBigUInt64LE(db + 40),
    },
    txnid: bytes.readBigUInt64LE(PAGE_HEADER + 128),
  };
}

// ---- the STR layout --------------------------------------------------------------------------

/** The key of sample `index` (0-based) of kind 'image' or 'label': `image-000000001` for index 0. */
export function strKey(kind: 'image' | 'label', index: number): string {
  return `${kind}-${String(index + 1).padStart(9, '0')}`;
}

/** The most samples the STR layout's nine-digit keys can number. */
export const MAX_LMDB_SAMPLES = 999_999_999;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * An LMDB dataset in the STR layout as a {@link DataSource}: sample i is `image-%09d` and
 * `label-%09d` with %09d = i + 1. Images are handed out as the encoded bytes stored.
 */
export class LmdbSource implements DataSource {
  readonly name: string;
  readonly size: number;
  /** The path the dataset was opened with. */
  readonly path: string;
  #file: LmdbFile;

  private constructor(location: string, file: LmdbFile, size: number) {
    this.path = location;
    this.name = path.basename(path.resolve(location));
    this.size = size;
    this.#file = file;
  }

  /**
   * Opens an LMDB dataset: a directory with data.mdb, or the data file.
   * @throws Error naming the path: anything {@link LmdbFile.open} refuses; "no num-samples key";
   *   a num-samples that is not a whole number; num-samples 0 (an empty dataset).
   */
  static async open(location: string): Promise<LmdbSource> {
    const file = await LmdbFile.open(location);
    try {
      const count = await file.get('num-samples');
      if (count === undefined) {
        throw new Error(`${location}: no num-samples key (an LMDB dataset holds num-samples, image-%09d and label-%09d)`);
      }
      const text = count.toString('latin1').trim();
      if (!/^\d+$/.test(text) || Number(text) > MAX_LMDB_SAMPLES) {
        throw new Error(`${location}: num-samples is ${describe(count.toString('latin1'))}, not a whole number up to ${MAX_LMDB_SAMPLES}`);
      }
      if (Number(text) === 0) throw new Error(`${location}: the dataset is empty (num-samples is 0)`);
      return new LmdbSource(location, file, Number(text));
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  /**
   * Sample `index` (0 ≤ index < size): the image's bytes, its label, and the origin
   * "<name>/image-%09d".
   * @throws Error naming the path and key when the image or label is missing or the label is not UTF-8.
   */
  async get(index: number): Promise<Sample> {
    check.integer(index, 'index', 0, this.size - 1);
    const imageKey = strKey('image', index);
    const labelKey = strKey('label', index);
    const [image, label] = await Promise.all([this.#file.get(imageKey), this.#file.get(labelKey)]);
    if (image === undefined) throw new Error(`${this.path}: no ${imageKey} (num-samples is ${this.size})`);
    if (label === undefined) throw new Error(`${this.path}: no ${labelKey} (num-samples is ${this.size})`);
    let text: string;
    try {
      text = utf8.decode(label);
    } catch {
      throw new Error(`${this.path}: ${labelKey} is not valid UTF-8`);
    }
    return { image, label: text, origin: `${this.name}/${imageKey}` };
  }

  async close(): Promise<void> {
    await this.#file.close();
  }
}

// ---- writing -----------------------------------------------------------------------------------

/**
 * Writes pages to a new file in the order they are numbered, through a buffer. Pages 0 and 1 (the
 * metas) are written last, by {@link PageWriter.finish}.
 */
class PageWriter {
  readonly pageSize = WRITE_PAGE_SIZE;
  /** The number the next page appended gets. */
  next = 2;
  #fd: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #flushedPages = 2;

  constructor(fd: number) {
    this.#fd = fd;
  }

  /** Appends whole pages (a multiple of the page size) numbered from `next`; returns the first number. */
  append(pages: Buffer): number {
    const first = this.next;
    this.next += pages.length / this.pageSize;
    this.#pending.push(pages);
    this.#pendingBytes += pages.length;
    if (this.#pendingBytes >= 1 << 22) this.flush();
    return first;
  }

  flush(): void {
    if (this.#pendingBytes === 0) return;
    const bytes = Buffer.concat(this.#pending, this.#pendingBytes);
    let written = 0;
    while (written < bytes.length) {
      written += writeSync(this.#fd, bytes, written, bytes.length - written, this.#flushedPages * this.pageSize + written);
    }
    this.#flushedPages = this.next;
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  /** Flushes the pages, syncs them, then writes and syncs the two metas. */
  finish(main: { depth: number; branchPages: number; leafPages: number; overflowPages: number; entries: number; root: bigint }): void {
    this.flush();
    fsyncSync(this.#fd);
    const metas = Buffer.alloc(2 * this.pageSize);
    const mapSize = Math.max(this.next * this.pageSize, 1 << 20);
    // Meta 0 is the empty database of transaction 0, meta 1 the data of transaction 1: what LMDB
    // itself leaves after creating an environment and committing one transaction.
    writeMetaPage(metas, 0, this.pageSize, mapSize, { depth: 0, branchPages: 0, leafPages: 0, overflowPages: 0, entries: 0, root: NO_PAGE }, 1, 0n);
    writeMetaPage(metas.subarray(this.pageSize), 1, this.pageSize, mapSize, main, this.next - 1, 1n);
    writeSync(this.#fd, metas, 0, metas.length, 0);
    fsyncSync(this.#fd);
  }
}

function writeMetaPage(
  page: Buffer,
  pgno: number,
  pageSize: number,
  mapSize: number,
  main: { depth: number; branchPages: number; leafPages: number; overflowPages: number; entries: number; root: bigint },
  lastPage: number,
  txnid: bigint,
): void {
  page.writeBigUInt64LE(BigInt(pgno), 0);
  page.writeUInt16LE(P_META, 10);
  const meta = PAGE_HEADER;
  page.writeUInt32LE(MAGIC, meta);
  page.writeUInt32LE(DATA_VERSION, meta + 4);
  page.writeBigUInt64LE(BigInt(mapSize), meta + 16);
  const free = meta + 24;
  page.writeUInt32LE(pageSize, free); // the free DB's pad holds the page size
  page.writeUInt16LE(MDB_INTEGERKEY, free + 4); // as liblmdb marks it
  page.writeBigUInt64LE(NO_PAGE, free + 40);
  const db = free + 48;
  page.writeUInt16LE(main.depth, db + 6);
  page.writeBigUInt64LE(BigInt(main.branchPages), db + 8);
  page.writeBigUInt64LE(BigInt(main.leafPages), db + 16);
  page.writeBigUInt64LE(BigInt(main.overflowPages), db + 24);
  page.writeBigUInt64LE(BigInt(main.entries), db + 32);
  page.writeBigUInt64LE(main.root, db + 40);
  page.writeBigUInt64LE(BigInt(lastPage), meta + 120);
  page.writeBigUInt64LE(txnid, meta + 128);
}

const even = (n: number) => n + (n & 1);

/** A child of the next level up: its page and the first key under it. */
interface Child {
  key: Buffer;
  pgno: number;
}

/**
 * Leaf pages for keys added in increasing order, each page filled before the next is started (as
 * LMDB's append mode does). Several runs may be open at once when their key ranges follow each
 * other: their leaves are joined in order by {@link buildTree}.
 */
class LeafRun {
  readonly leaves: Child[] = [];
  entries = 0;
  overflowPages = 0;
  #pages: PageWriter;
  #page: Buffer;
  #count = 0;
  #upper: number;
  #firstKey: Buffer | undefined;
  #lastKey: Buffer | undefined;
  /** liblmdb's me_nodemax: a bigger node keeps its value on overflow pages. */
  #nodeMax: number;

  constructor(pages: PageWriter) {
    this.#pages = pages;
    this.#page = Buffer.alloc(pages.pageSize);
    this.#upper = pages.pageSize;
    this.#nodeMax = (((pages.pageSize - PAGE_HEADER) / 2) & -2) - 2;
  }

  add(key: Buffer, value: Uint8Array): void {
    if (key.length === 0 || key.length > MAX_KEY_SIZE) throw new RangeError(`Expected a key of 1 to ${MAX_KEY_SIZE} bytes but received ${key.length} bytes`);
    if (value.length > 0xffffffff) throw new RangeError(`Expected a value under 4 GiB for ${key.toString()} but received ${value.length} bytes`);
    if (this.#lastKey !== undefined && Buffer.compare(this.#lastKey, key) >= 0) {
      throw new Error(`keys must be added in increasing order: ${describe(key.toString())} after ${describe(this.#lastKey.toString())}`);
    }
    this.#lastKey = key;
    let flags = 0;
    let stored: Uint8Array = value;
    if (NODE_HEADER + key.length + value.length > this.#nodeMax) {
      const count = Math.floor((PAGE_HEADER - 1 + value.length) / this.#pages.pageSize) + 1;
      const run = Buffer.alloc(count * this.#pages.pageSize);
      run.writeUInt16LE(P_OVERFLOW, 10);
      run.writeUInt32LE(count, 12);
      run.set(value, PAGE_HEADER);
      const first = this.#pages.next;
      run.writeBigUInt64LE(BigInt(first), 0);
      this.#pages.append(run);
      this.overflowPages += count;
      flags = F_BIGDATA;
      stored = Buffer.alloc(8);
      (stored as Buffer).writeBigUInt64LE(BigInt(first));
    }
    const size = even(NODE_HEADER + key.length + stored.length);
    if (this.#count > 0 && PAGE_HEADER + 2 * (this.#count + 1) > this.#upper - size) this.#flushLeaf();
    const page = this.#page;
    this.#upper -= size;
    const node = this.#upper;
    page.writeUInt16LE(node, PAGE_HEADER + 2 * this.#count);
    page.writeUInt16LE(value.length & 0xffff, node);
    page.writeUInt16LE(Math.floor(value.length / 0x10000), node + 2);
    page.writeUInt16LE(flags, node + 4);
    page.writeUInt16LE(key.length, node + 6);
    key.copy(page, node + NODE_HEADER);
    page.set(stored, node + NODE_HEADER + key.length);
    if (this.#count === 0) this.#firstKey = key;
    this.#count++;
    this.entries++;
  }

  /** Writes the last, partly filled leaf. */
  finish(): void {
    if (this.#count > 0) this.#flushLeaf();
  }

  #flushLeaf(): void {
    const pgno = this.#pages.next;
    this.#page.writeBigUInt64LE(BigInt(pgno), 0);
    this.#page.writeUInt16LE(P_LEAF, 10);
    this.#page.writeUInt16LE(PAGE_HEADER + 2 * this.#count, 12);
    this.#page.writeUInt16LE(this.#upper, 14);
    this.#pages.append(this.#page);
    this.leaves.push({ key: this.#firstKey as Buffer, pgno });
    this.#page = Buffer.alloc(this.#pages.pageSize);
    this.#count = 0;
    this.#upper = this.#pages.pageSize;
  }
}

/** Builds the branch levels over leaves in key order; returns the root, the depth and the branch pages. */
function buildTree(pages: PageWriter, leaves: Child[]): { root: bigint; depth: number; branchPages: number } {
  if (leaves.length === 0) return { root: NO_PAGE, depth: 0, branchPages: 0 };
  let level = leaves;
  let depth = 1;
  let branchPages = 0;
  const nodeSize = (child: Child, first: boolean) => even(NODE_HEADER + (first ? 0 : child.key.length)) + 2;
  while (level.length > 1) {
    // Fill each page in turn; a last page with a single child borrows one from the page before.
    const groups: Child[][] = [[]];
    let used = PAGE_HEADER;
    for (const child of level) {
      let group = groups[groups.length - 1];
      if (group.length > 0 && used + nodeSize(child, false) > pages.pageSize) {
        group = [];
        groups.push(group);
        used = PAGE_HEADER;
      }
      used += nodeSize(child, group.length === 0);
      group.push(child);
    }
    const last = groups[groups.length - 1];
    if (last.length === 1 && groups.length > 1) last.unshift((groups[groups.length - 2].pop() as Child));
    const parents: Child[] = [];
    for (const group of groups) {
      const page = Buffer.alloc(pages.pageSize);
      const pgno = pages.next;
      page.writeBigUInt64LE(BigInt(pgno), 0);
      page.writeUInt16LE(P_BRANCH, 10);
      let upper = pages.pageSize;
      group.forEach((child, i) => {
        const key = i === 0 ? Buffer.alloc(0) : child.key;
        upper -= even(NODE_HEADER + key.length);
        page.writeUInt16LE(upper, PAGE_HEADER + 2 * i);
        page.writeUInt16LE(child.pgno & 0xffff, upper);
        page.writeUInt16LE(Math.floor(child.pgno / 0x10000) & 0xffff, upper + 2);
        page.writeUInt16LE(Math.floor(child.pgno / 0x100000000) & 0xffff, upper + 4);
        page.writeUInt16LE(key.length, upper + 6);
        key.copy(page, upper + NODE_HEADER);
      });
      page.writeUInt16LE(PAGE_HEADER + 2 * group.length, 12);
      page.writeUInt16LE(upper, 14);
      pages.append(page);
      parents.push({ key: group[0].key, pgno });
      branchPages++;
    }
    level = parents;
    depth++;
  }
  return { root: BigInt(level[0].pgno), depth, branchPages };
}

/** Options of {@link LmdbWriter.create} and {@link writeLmdb}. */
export interface LmdbWriterOptions {
  /** Replace the data.mdb of an existing LMDB directory (default false: refuse). */
  overwrite?: boolean;
}

/**
 * Makes the directory of a new LMDB environment and opens a temporary data file in it, renamed
 * to data.mdb when complete.
 */
function createEnvironment(directory: string, options: Record<string, unknown>): { fd: number; temporary: string; final: string } {
  if (typeof directory !== 'string' || directory === '') throw new TypeError(`Expected a path for directory but received ${describe(directory)}`);
  const overwrite = options.overwrite === undefined ? false : check.boolean(options.overwrite, 'overwrite');
  const info = existsSync(directory) ? statSync(directory) : undefined;
  if (info !== undefined && !info.isDirectory()) throw new Error(`${directory}: exists and is not a directory`);
  const final = path.join(directory, 'data.mdb');
  if (info !== undefined && !overwrite && readdirSync(directory).length > 0) {
    throw new Error(`${directory}: exists and is not empty (pass overwrite to replace its data.mdb)`);
  }
  mkdirSync(directory, { recursive: true });
  const temporary = path.join(directory, `data.mdb.partial-${process.pid}`);
  return { fd: openSync(temporary, 'w'), temporary, final };
}

/**
 * Writes a new LMDB dataset in the STR layout, one sample at a time: a directory holding data.mdb
 * (LMDB 0.9 data format, readable by Python's lmdb and every STR project). Images and labels go to
 * disk as they come (a few MiB are buffered), so datasets of any size can be written.
 *
 * @example
 * ```ts
 * const writer = LmdbWriter.create('train.lmdb');
 * writer.add(pngBytes, 'hello');
 * await writer.close(); // train.lmdb/data.mdb: num-samples 1, image-000000001, label-000000001
 * ```
 */
export class LmdbWriter {
  /** The directory being written. */
  readonly directory: string;
  #pages: PageWriter;
  #images: LeafRun;
  #labels: LeafRun;
  #fd: number;
  #temporary: string;
  #final: string;
  #count = 0;
  #done = false;

  private constructor(directory: string, fd: number, temporary: string, final: string) {
    this.directory = directory;
    this.#fd = fd;
    this.#temporary = temporary;
    this.#final = final;
    this.#pages = new PageWriter(fd);
    this.#images = new LeafRun(this.#pages);
    this.#labels = new LeafRun(this.#pages);
  }

  /**
   * Starts a dataset in `directory` (made if missing).
   * @throws Error when the directory exists and is not empty (unless `overwrite`), or is a file.
   */
  static create(directory: string, options?: LmdbWriterOptions): LmdbWriter {
    const { fd, temporary, final } = createEnvironment(directory, check.options(options, 'options'));
    return new LmdbWriter(directory, fd, temporary, final);
  }

  /** Samples added so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Adds sample number `count + 1`: an encoded image (PNG, JPEG…) and its label.
   * @throws TypeError for an image that is not a non-empty Buffer/Uint8Array or a label that is not a string.
   */
  add(image: Uint8Array, label: string): void {
    if (this.#done) throw new Error(`${this.directory}: the writer is closed`);
    if (!(image instanceof Uint8Array) || image.length === 0) throw new TypeError(`Expected a non-empty Buffer for image but received ${describe(image)}`);
    if (typeof label !== 'string') throw new TypeError(`Expected a string for label but received ${describe(label)}`);
    if (this.#count === MAX_LMDB_SAMPLES) throw new RangeError(`Expected at most ${MAX_LMDB_SAMPLES} samples for an LMDB dataset`);
    // Images and labels are two runs of leaves: every image-… key sorts before every label-… key.
    this.#images.add(Buffer.from(strKey('image', this.#count)), image);
    this.#labels.add(Buffer.from(strKey('label', this.#count)), Buffer.from(label, 'utf8'));
    this.#count++;
  }

  /** Writes num-samples and the tree, syncs, and renames the file to data.mdb. */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    try {
      this.#labels.add(Buffer.from('num-samples'), Buffer.from(String(this.#count)));
      finishFile(this.#pages, [this.#images, this.#labels]);
      closeSync(this.#fd);
      renameSync(this.#temporary, this.#final);
    } catch (err) {
      this.#discard();
      throw err;
    }
  }

  /** Stops writing and removes the partial file. */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#discard();
  }

  #discard(): void {
    try {
      closeSync(this.#fd);
    } catch {
      // already closed
    }
    rmSync(this.#temporary, { force: true });
  }
}

function finishFile(pages: PageWriter, runs: LeafRun[]): void {
  for (const run of runs) run.finish();
  const leaves = runs.flatMap((run) => run.leaves);
  const { root, depth, branchPages } = buildTree(pages, leaves);
  pages.finish({
    depth,
    branchPages,
    leafPages: leaves.length,
    overflowPages: runs.reduce((sum, run) => sum + run.overflowPages, 0),
    entries: runs.reduce((sum, run) => sum + run.entries, 0),
    root,
  });
}

/**
 * Writes an LMDB dataset in the STR layout from samples (an iterable or async iterable of
 * `{ image, label }`). Returns the number of samples written. On an error the partial file is removed.
 * @example
 * ```ts
 * await writeLmdb('train.lmdb', generateSamples(), { overwrite: true });
 * ```
 */
export async function writeLmdb(
  directory: string,
  samples: AsyncIterable<{ image: Uint8Array; label: string }> | Iterable<{ image: Uint8Array; label: string }>,
  options?: LmdbWriterOptions,
): Promise<number> {
  const writer = LmdbWriter.create(directory, options);
  try {
    for await (const { image, label } of samples) writer.add(image, label);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  await writer.close();
  return writer.count;
}

/**
 * Writes any keys and values (sorted here) as a new LMDB environment `directory/data.mdb`: for
 * datasets in other layouts and for tests. Keys and values are strings (UTF-8) or bytes.
 */
export function writeLmdbEntries(
  directory: string,
  entries: Iterable<readonly [string | Uint8Array, string | Uint8Array]>,
  options?: LmdbWriterOptions,
): void {
  const bytes = (x: string | Uint8Array) => (typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x));
  const sorted = [...entries].map(([k, v]) => [bytes(k), bytes(v)] as const).sort((a, b) => Buffer.compare(a[0], b[0]));
  const { fd, temporary, final } = createEnvironment(directory, check.options(options, 'options'));
  try {
    const pages = new PageWriter(fd);
    const run = new LeafRun(pages);
    for (const [key, value] of sorted) run.add(key, value);
    finishFile(pages, [run]);
    closeSync(fd);
    renameSync(temporary, final);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(temporary, { force: true });
    throw err;
  }
}
