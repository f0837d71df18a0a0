"""NovelAI V4's numeric weights next to its braces: what each word weighs, and where it is wrong.

`1.5::text::` multiplies the text by 1.5, `-1::text::` takes a concept away; `{x}` is ×1.05 and
`[x]` ÷1.05, and all of them multiply when nested (docs/novelai.md states the rules).
"""

import promptweights as pw

prompt = "1girl, 1.5::rain, {night}::, -1::monochrome::, [[blurry]], artist:name"
for text, weight in pw.weighted_spans(prompt, dialect="novelai"):
    print(f"{weight:8.4f}  {text!r}")

# The tree keeps the weight as written, and renders back to the same text.
tree = pw.parse(prompt, dialect="novelai")
print(tree.parts[0].children[1])
assert pw.render(tree) == prompt

# Lenient mode reads a section left open to the end; strict mode says where it starts.
print(pw.weighted_spans("a, 2::b, c", dialect="novelai"))
try:
    pw.parse("a, 2::b, c", dialect="novelai", strict=True)
except pw.PromptSyntaxError as error:
    print(error)
