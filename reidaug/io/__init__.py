"""The ground floor: file I/O every other layer uses, importing nothing of reidaug but errors.

- :mod:`.atomic` — temp name in the same folder, then ``os.replace``: bytes, text, JSON, PNG,
  any writer (``fig.savefig``, ``PIL.Image.save``, ``h5py.File``), whole folders.
- :mod:`.checkpoint` — atomic ``torch.save`` and a ``torch.load`` whose failure is a clear error.
- :mod:`.jsonl` — the one JSON-lines metric / loss log; a resumed run truncates it to its
  checkpoint, so a killed-and-resumed run writes the same log as an uninterrupted one.

Imports go one way: ground floor (``reidaug.errors``, ``reidaug.io``) → library (``data``,
``pose``, ``eval``, ``train``, ``gen``) → ``models`` → ``stages`` → ``pipeline`` / CLI.
"""
