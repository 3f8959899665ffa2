// A worker thread of the synth pool (pool.ts): makes the samples it is asked for, with the options
// it was started with, and sends them back (pixel buffers transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads';
import { generatorContext, type ResolvedSynthOptions } from './index.js';
import type { WorkerReply, WorkerRequest } from './pool.js';
import { encodeImage, generateSample } from './sample.js';

const port = parentPort;
if (port === null) throw new Error('lib/synth/worker.js runs only as a worker thread');
const ctx = generatorContext(workerData as ResolvedSynthOptions);

port.on('message', async ({ id, index, encode }: WorkerRequest) => {
  let reply: WorkerReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const { image, ...sample } = await generateSample(ctx, index);
    if (encode) {
      const { bytes, extension } = await encodeImage(image);
      const copy = new Uint8Array(bytes); // a buffer of its own, so it can be transferred
      reply = { id, ok: true, sample, image: { bytes: copy, extension } };
      transfer = [copy.buffer];
    } else if (Buffer.isBuffer(image)) {
      const copy = new Uint8Array(image);
      reply = { id, ok: true, sample, image: { bytes: copy, extension: 'jpg' } };
      transfer = [copy.buffer];
    } else {
      const data = new Uint8Array(image.data);
      reply = { id, ok: true, sample, image: { ...image, data } };
      transfer = [data.buffer];
    }
  } catch (err) {
    reply = { id, ok: false, message: (err as Error).message, stack: (err as Error).stack };
  }
  port.postMessage(reply, transfer);
});
