"""blobstore-fs: wasi:blobstore on a local directory.

Run with `python -m providers.blobstore_fs`. Link target config: `root` (required, an
absolute directory; created if missing), optional `page_size` and `upload_timeout`.
Container `c` is the directory `{root}/c`, object `a/b.txt` the file `{root}/c/a/b.txt`;
see `store.py`.
"""

from providers.blobstore_fs.provider import FsBlobstoreProvider

__all__ = ["FsBlobstoreProvider"]
