// Word images for training tests, drawn from a 5×7 bitmap font (no fonts needed, identical on every
// machine): a DataSource over a small fixed set of words, each drawn in several variations (offset,
// ink and background shade), deterministic in the index.
'use strict';

const GLYPHS = {
  a: ['.....', '.....', '.###.', '....#', '.####', '#...#', '.####'],
  c: ['.....', '.....', '.###.', '#....', '#....', '#...#', '.###.'],
  d: ['....#', '....#', '.##.#', '#..##', '#...#', '#...#', '.####'],
  e: ['.....', '.....', '.###.', '#...#', '#####', '#....', '.###.'],
  l: ['.##..', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  n: ['.....', '.....', '#.##.', '##..#', '#...#', '#...#', '#...#'],
  o: ['.....', '.....', '.###.', '#...#', '#...#', '#...#', '.###.'],
  r: ['.....', '.....', '#.##.', '##..#', '#....', '#....', '#....'],
  s: ['.....', '.....', '.####', '#....', '.###.', '....#', '####.'],
  t: ['.#...', '.#...', '####.', '.#...', '.#...', '.#..#', '..##.'],
};

/** The characters the font draws. */
const WORD_CHARSET = Object.keys(GLYPHS).join('');

/** Raw RGB pixels of `word` (characters of WORD_CHARSET), variation `v` (offset and shades). */
function drawWord(word, v = 0) {
  const scale = 3;
  const ox = 6 + ((v * 7) % 13);
  const oy = 4 + ((v * 3) % 5);
  const width = ox + word.length * 6 * scale + 8;
  const height = oy + 7 * scale + 6;
  const background = 215 + ((v * 13) % 35);
  const ink = 15 + ((v * 37) % 70);
  const data = Buffer.alloc(width * height * 3, background);
  [...word].forEach((ch, k) => {
    GLYPHS[ch].forEach((row, gy) => {
      for (let gx = 0; gx < 5; gx++) {
        if (row[gx] !== '#') continue;
        for (let dy = 0; dy < scale; dy++) {
          for (let dx = 0; dx < scale; dx++) {
            const x = ox + (k * 6 + gx) * scale + dx;
            const y = oy + gy * scale + dy;
            data.fill(ink, 3 * (y * width + x), 3 * (y * width + x) + 3);
          }
        }
      }
    });
  });
  return { data, width, height, channels: 3 };
}

/**
 * A DataSource of `size` samples: sample i is words[i % words.length] in variation
 * floor(i / words.length). `size` may be Infinity.
 */
function wordSource(words, size = words.length * 8, name = 'words') {
  return {
    name,
    size,
    async get(index) {
      const word = words[index % words.length];
      return { image: drawWord(word, Math.floor(index / words.length)), label: word, origin: `${name}#${index}` };
    },
  };
}

module.exports = { WORD_CHARSET, drawWord, wordSource };
