"""Emotion detection on the workers: a TF-IDF + logistic model for English, a lexicon for French."""
