"""Text in: readers (txt, folders, EPUB), tokenizing, vocabularies, corpora, id streams, batches."""
