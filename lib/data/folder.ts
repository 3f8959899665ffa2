// Folder datasets: a directory holding `labels.tsv`, one sample a line, `relative/path<TAB>label`
// in UTF-8 (an optional byte-order mark; CRLF line ends; blank lines ignored). The label is all
// that follows the first tab, kept as written. Image paths are relative to the directory. The
// whole file is checked when the dataset opens; a missing image is reported when its sample is read.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { DataSource, Sample } from './source.js';
import * as check from '../validate.js';

/** The name of a folder dataset's label file. */
export const LABELS_FILE = 'labels.tsv';

/** A folder dataset as a {@link DataSource}; images are handed out as paths. */
export class FolderSource implements DataSource {
  readonly name: string;
  readonly size: number;
  /** The dataset's directory. */
  readonly directory: string;
  #entries: Array<{ file: string; relative: string; label: string }>;

  private constructor(directory: string, entries: Array<{ file: string; relative: string; label: string }>) {
    this.directory = directory;
    this.name = path.basename(path.resolve(directory));
    this.size = entries.length;
    this.#entries = entries;
  }

  /**
   * Reads `<directory>/labels.tsv` (or a labels file given itself: its directory is the dataset's).
   * @throws Error naming the path: no such directory, no labels.tsv, "<file>:<line>: expected
   *   'path<TAB>label' but found no tab", "<file>:<line>: no image path before the tab", or
   *   "<file>: the dataset is empty (no 'path<TAB>label' lines)".
   */
  static async open(location: string): Promise<FolderSource> {
    const info = await stat(location).catch(() => undefined);
    if (info === undefined) throw new Error(`${location}: no such file or directory`);
    const directory = info.isDirectory() ? location : path.dirname(location);
    const labelsFile = info.isDirectory() ? path.join(location, LABELS_FILE) : location;
    let text: string;
    try {
      text = await readFile(labelsFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${location}: no ${LABELS_FILE} in this directory`);
      throw new Error(`${labelsFile}: ${(err as Error).message}`, { cause: err });
    }
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const entries: Array<{ file: string; relative: string; label: string }> = [];
    text.split('\n').forEach((raw, i) => {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.trim() === '') return;
      const tab = line.indexOf('\t');
      if (tab < 0) throw new Error(`${labelsFile}:${i + 1}: expected 'path<TAB>label' but found no tab`);
      const relative = line.slice(0, tab);
      if (relative.trim() === '') throw new Error(`${labelsFile}:${i + 1}: no image path before the tab`);
      entries.push({ file: path.isAbsolute(relative) ? relative : path.join(directory, relative), relative, label: line.slice(tab + 1) });
    });
    if (entries.length === 0) throw new Error(`${labelsFile}: the dataset is empty (no 'path<TAB>label' lines)`);
    return new FolderSource(directory, entries);
  }

  /**
   * Sample `index` (0 ≤ index < size): the image's path, its label, and the origin
   * "<name>/<relative path>".
   * @throws Error "<path>: no such file" (or "is a directory") when the image is not there.
   */
  async get(index: number): Promise<Sample> {
    check.integer(index, 'index', 0, this.size - 1);
    const { file, relative, label } = this.#entries[index];
    const info = await stat(file).catch(() => undefined);
    if (info === undefined) throw new Error(`${file}: no such file`);
    if (info.isDirectory()) throw new Error(`${file}: is a directory`);
    return { image: file, label, origin: `${this.name}/${relative}` };
  }
}
