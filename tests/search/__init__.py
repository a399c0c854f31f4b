"""Tests of nasfpn_tf.search (a package, so test file names cannot clash with other folders)."""
