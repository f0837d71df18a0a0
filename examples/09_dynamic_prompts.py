"""Dynamic prompts and wildcards expanded before the A1111 parser, next to A1111's own syntax.

`{a|b}` variants, `{2$$a|b|c}` picks and `__name__` wildcards become plain prompts;
`[day|night]` stays A1111's alternation, and `(x:1.2)` stays a weight.
"""

import promptweights as pw
from promptweights.dynamic import count, expand

wildcards = {
    "animal": ["cat", "{old|young} dog"],
    "colours": {"cold": ["blue", "teal"], "warm": ["red"]},
}
template = "a (__animal__:1.2) in {2$$ and $$__colours/*__}, [day|night]"
print(count(template, wildcards=wildcards), "prompts at most")
prompts = expand(template, wildcards=wildcards)
for prompt in prompts[::6]:
    print(prompt, "->", pw.weighted_spans(pw.schedules(prompt, 2)[0][1])[1])

# Random mode: the same seed gives the same prompts.
print(expand(template, wildcards=wildcards, mode="random", seed=7, count=3))

# NovelAI mode: {x} stays emphasis; a variant's braces clash with it, reported with a position.
try:
    expand("{masterpiece}, {red|blue} hair", dialect="novelai", strict=True)
except pw.PromptSyntaxError as error:
    print(error)
