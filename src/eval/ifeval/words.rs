//! NLTK's `word_tokenize` (Punkt sentences, then the NLTK Treebank word tokenizer) (placeholder).

/// The tokens of `nltk.word_tokenize(text)`.
pub fn word_tokenize(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}
