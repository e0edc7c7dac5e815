"""Replacing a generated block between two HTML-comment markers in a Markdown file."""

import os


def replace_block(path: str, begin: str, end: str, body: str, title: str = "",
                  heading: str = "") -> None:
  """Writes `begin\\nbody\\nend` over the block between the markers in `path`.

  Prose around the block is kept. Without the markers the block is appended
  (after `heading`, if given); without the file, one is started with `title`.
  """
  block = f"{begin}\n{body}\n{end}"
  text = open(path).read() if os.path.exists(path) else f"# {title}\n"
  if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip() + "\n\n" + heading + block + "\n"
  with open(path, "w") as f:
    f.write(text)
