// The contract between training data and its consumers (the trainer, `safl eval`, `safl synth`):
// a DataSource hands out labelled word images by index. Folder datasets (labels.tsv), LMDB
// datasets and the synthetic generator implement it; mixing and shuffling compose them.
import type { ImageInput } from '../image.js';

/** One labelled word image. */
export interface Sample {
  /** A path, an encoded image (Buffer/Uint8Array), or raw pixels — anything image.ts reads. */
  image: ImageInput;
  /** The word as written in the image (Unicode; case kept). */
  label: string;
  /** Where it came from, for error messages and error lists (e.g. "IC03/images/0007.jpg"). */
  origin: string;
}

/** A random-access collection of samples. */
export interface DataSource {
  /** A short name for tables and messages (e.g. the folder name, "synth"). */
  readonly name: string;
  /** Number of samples; Infinity for a generator that makes a sample for any index. */
  readonly size: number;
  /** Sample `index` (0 <= index < size). Deterministic: the same index gives the same sample. */
  get(index: number): Promise<Sample>;
  /** Releases files or database handles (optional). */
  close?(): Promise<void>;
}
