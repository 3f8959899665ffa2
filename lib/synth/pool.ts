// Worker threads that make synthetic samples in parallel (worker.ts is the other side). Each worker
// builds the same fonts and word generator from the same options, so a sample is the same whichever
// worker makes it; requests go to the worker with the fewest in flight.
//
// Note [workers and the event loop]: a worker that has nothing to do is unref'd, so an idle pool
// does not keep the process alive; it is ref'd again while a request to it is pending.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { RawImage } from '../image.js';
import type { ResolvedSynthOptions } from './index.js';
import type { SynthSample } from './sample.js';

/** A request to a worker. */
export interface WorkerRequest {
  id: number;
  index: number;
  /** Return the image as file bytes (JPEG as made, raw pixels as PNG). */
  encode: boolean;
}

/** A worker's answer: the sample, or the error that stopped it. */
export type WorkerReply =
  | { id: number; ok: true; sample: Omit<SynthSample, 'image'>; image: { bytes: Uint8Array; extension: 'jpg' | 'png' } | RawImage }
  | { id: number; ok: false; message: string; stack?: string };

interface Pending {
  resolve(sample: SynthSample | EncodedSample): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** A sample made by a worker with `encode`: its image as file bytes and their extension. */
export type EncodedSample = Omit<SynthSample, 'image'> & { image: Buffer; extension: 'jpg' | 'png' };

export class SynthPool {
  private readonly slots: Slot[] = [];
  private nextId = 0;
  private closed = false;

  /** Starts `workers` threads generating with `options`. */
  constructor(options: ResolvedSynthOptions, workers: number) {
    for (let i = 0; i < workers; i++) {
      const worker = new Worker(path.join(__dirname, 'worker.js'), { workerData: options });
      const slot: Slot = { worker, pending: new Map() };
      worker.unref(); // Note [workers and the event loop]
      worker.on('message', (reply: WorkerReply) => this.settle(slot, reply));
      worker.on('error', (err) => this.fail(slot, err));
      worker.on('exit', (code) => {
        this.slots.splice(this.slots.indexOf(slot), 1);
        this.fail(slot, new Error(`a synth worker stopped (exit code ${code})`));
      });
      this.slots.push(slot);
    }
  }

  /** Makes sample `index`; with `encode`, its image comes as file bytes (see EncodedSample). */
  render(index: number, encode: false): Promise<SynthSample>;
  render(index: number, encode: true): Promise<EncodedSample>;
  render(index: number, encode: boolean): Promise<SynthSample | EncodedSample> {
    if (this.closed) return Promise.reject(new Error('the synth worker pool is closed'));
    if (this.slots.length === 0) return Promise.reject(new Error('every synth worker has stopped'));
    const slot = this.slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.nextId++;
    return new Promise<SynthSample | EncodedSample>((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, index, encode } satisfies WorkerRequest);
    });
  }

  /** Stops the workers; pending requests fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.slots].map((s) => s.worker.terminate()));
  }

  private settle(slot: Slot, reply: WorkerReply): void {
    const pending = slot.pending.get(reply.id);
    if (pending === undefined) return;
    slot.pending.delete(reply.id);
    if (slot.pending.size === 0) slot.worker.unref();
    if (!reply.ok) {
      const err = new Error(reply.message);
      if (reply.stack !== undefined) err.stack = reply.stack;
      pending.reject(err);
      return;
    }
    const { image } = reply;
    if ('bytes' in image) {
      const bytes = Buffer.from(image.bytes.buffer, image.bytes.byteOffset, image.bytes.byteLength);
      pending.resolve({ ...reply.sample, image: bytes, extension: image.extension });
    } else {
      pending.resolve({ ...reply.sample, image });
    }
  }

  private fail(slot: Slot, err: Error): void {
    const pending = [...slot.pending.values()];
    slot.pending.clear();
    const reason = this.closed ? new Error('the synth worker pool is closed') : err;
    for (const p of pending) p.reject(reason);
  }
}
