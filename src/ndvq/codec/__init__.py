"""The ``.ndvq`` compressed file: a header, the codes entropy-coded with ``constriction``, a checksum.

``compress_files(run, files, out_dir, levels=None, prior="auto", overrides=())`` writes one ``.ndvq`` per
input; ``decompress_files(paths, out_dir)`` writes the decoded files; ``read_codes(path)`` gives the codes.
Parts: ``format`` (bytes: magic, version, JSON header, CRC-32), ``entropy`` (the fixed-point frequency rule,
ANS coding), ``histogram`` (the static per-column model stored with the run), ``coding`` (tokens <-> payload in
the layout's order), ``levels`` (``--levels k``), ``files`` (whole files). See docs/compression.md.
"""

from ndvq.codec.files import PRIORS, compress_files, decompress_files, read_codes, token_model_for

__all__ = ["compress_files", "decompress_files", "read_codes", "token_model_for", "PRIORS"]
