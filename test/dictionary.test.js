// The word prior of lib/dictionary.ts (Note [dictionary]): word keys, the built-in English words,
// and the choice among candidate readings. Its use by a trained model is in default-model.test.js.
'use strict';
const assert = require('node:assert/strict');
const { WordSet, chooseReading, englishWords, wordKey } = require('../dist/dictionary.js');

describe('dictionary', () => {
  it('keys words in lower case with only letters and digits', () => {
    assert.equal(wordKey("DON'T"), 'dont');
    assert.equal(wordKey('door;'), 'door');
    assert.equal(wordKey('Café'), 'café');
    assert.equal(wordKey('Cafe\u0301'), 'café'); // NFC: e + combining acute is é
    assert.equal(wordKey('ΑΘΗΝΑ'), 'αθηνα');
    assert.equal(wordKey('1-800'), '1800');
    assert.equal(wordKey('--'), '');
  });

  it('a word set knows its words by key, and nothing without a letter or digit', () => {
    const words = new WordSet(['Door', "don't", '', '--']);
    assert.equal(words.size, 2);
    for (const known of ['DOOR', 'door;', 'DONT', "Don't"]) assert.ok(words.has(known), known);
    for (const unknown of ['d6or', 'doors', '', '--', '.']) assert.ok(!words.has(unknown), unknown);
  });

  it('the English words hold both spellings and the names the generator draws', () => {
    const english = englishWords();
    assert.ok(english.size > 60000 && english.size < 80000, `${english.size}`);
    for (const word of ['door', 'CENTER', 'Centre', 'theater', 'jewellery', 'Indiana', 'DIEGO', 'murphy']) assert.ok(english.has(word), word);
    for (const word of ['d6or', 'Indlana', 'SCHOOI']) assert.ok(!english.has(word), word);
    assert.equal(englishWords(), english); // built once
  });

  it('keeps the most confident reading, unless a known word is within e^weight of it', () => {
    const words = new WordSet(['door']);
    const candidates = [
      { text: 'd6or', confidence: 0.5 },
      { text: 'door', confidence: 0.1 }, // ln(0.5 / 0.1) = 1.61
      { text: 'dcor', confidence: 0.3 },
    ];
    assert.equal(chooseReading(candidates, words, 0), 0);
    assert.equal(chooseReading(candidates, words, 1.6), 0);
    assert.equal(chooseReading(candidates, words, 1.62), 1);
    assert.equal(chooseReading(candidates, new WordSet(['door', 'dcor']), 2), 2); // both known: the more confident
    assert.equal(chooseReading(candidates.slice(0, 1), words, 100), 0);
    assert.equal(chooseReading(candidates, undefined, 100), 0); // no dictionary: the most confident
    assert.equal(chooseReading(candidates.slice(1), undefined, 100), 1);
    // On a tie the earlier candidate; a confidence of 0 is never chosen over a positive one.
    assert.equal(chooseReading([{ text: 'a', confidence: 0.2 }, { text: 'b', confidence: 0.2 }], words, 2), 0);
    assert.equal(chooseReading([{ text: 'door', confidence: 0 }, { text: 'x', confidence: 1e-30 }], words, 50), 1);
  });
});
