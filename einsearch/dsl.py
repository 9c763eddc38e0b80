"""The structure language: text -> syntax tree, by recursive descent, with a position on every node.

One structure per file. A statement per line; a ``for`` loop's body is indented::

    doc "MLR attention: level l scores pairs in the same of 2^(l-1) sequence blocks"
    size T = 1024            "sequence length"
    size D = 512             "model width"
    param levels = 8         "number of levels"
    param ranks[levels] = [32, 8, 6, 4, 4, 4, 4, 2]
    for l in 1..levels:
        index g: 2^(l-1), r: ranks[l]
        score += x[(g t), i] Q[i, r] K[j, r] x[(g u), j]  scale 1/r

``x`` is the input (T x D); its first use in a score is the query token, its second the key
token. An index shared by both uses of ``x`` and kept is a block pattern; ``where lo <= t - u
<= hi`` restricts a term to a band. See ``catalog/`` for every construct in use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .errors import DSLError, Pos
from .expr import FUNCTIONS, Binary, Call, Expr, Item, ListLit, Name, Num, Unary, walk

KEYWORDS = {"doc", "size", "param", "let", "choice", "index", "require", "sum", "score", "for", "in",
            "where", "scale", "and", "or", "not"}  # fmt: skip
RESERVED = KEYWORDS | {"x"} | set(FUNCTIONS)
MAX_NESTING = 40  # brackets, signs and powers inside one another (the parser recurses on each)
MAX_DEPTH = 200  # an expression tree deeper than this would exhaust the stack when evaluated
MAX_DIGITS = 1000  # longer number literals are surely a mistake (and int() refuses past 4300)

TOKEN = re.compile(
    r"""(?P<space>[ \t]+)|(?P<comment>\#[^\n]*)|(?P<string>"[^"\n]*")|(?P<int>\d+)
    |(?P<name>[A-Za-z_][A-Za-z_0-9]*)
    |(?P<op>\+=|\*\*|//|\.\.|<=|>=|==|!=|[-+*/%^()\[\],:=<>|])""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # name, int, string, op, newline, indent, dedent, end
    text: str
    pos: Pos


def tokenize(text: str) -> Iterator[Token]:
    """Tokens with NEWLINE / INDENT / DEDENT for the one level of block a loop needs."""
    indents = [0]
    depth = 0  # open brackets: newlines inside them do not end a statement
    line_no = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if (not stripped or stripped.startswith("#")) and depth == 0:
            continue
        col = 0
        if depth == 0:
            width = len(line) - len(line.lstrip(" \t"))
            if "\t" in line[:width]:
                raise DSLError("indent with spaces, not tabs", Pos(line_no, 1))
            if width > indents[-1]:
                indents.append(width)
                yield Token("indent", "", Pos(line_no, 1))
            while width < indents[-1]:
                indents.pop()
                yield Token("dedent", "", Pos(line_no, 1))
            if width != indents[-1]:
                raise DSLError("this line's indent matches no enclosing block", Pos(line_no, 1))
        while col < len(line):
            m = TOKEN.match(line, col)
            if not m:
                what = "unterminated string" if line[col] == '"' else f"unexpected character {line[col]!r}"
                raise DSLError(what, Pos(line_no, col + 1))
            kind, value = m.lastgroup, m.group()
            if kind == "op" and value in "([":
                depth += 1
            elif kind == "op" and value in ")]":
                depth = max(depth - 1, 0)
            if kind not in ("space", "comment"):
                yield Token(kind, value, Pos(line_no, col + 1))
            col = m.end()
        if depth == 0:
            yield Token("newline", "", Pos(line_no, len(line) + 1))
    for _ in indents[1:]:
        yield Token("dedent", "", Pos(line_no + 1, 1))
    yield Token("end", "", Pos(line_no + 1, 1))


# ---------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class SymbolDecl:
    """``size``/``param``/``choice`` (options a user can set) or ``let`` (derived)."""

    kind: str
    name: str
    value: Expr | None  # None for a choice
    pos: Pos
    length: Expr | None = None  # a list parameter's declared length
    choices: tuple[str, ...] = ()
    doc: str = ""

    @property
    def is_option(self) -> bool:
        return self.kind != "let"


@dataclass(frozen=True)
class IndexDecl:
    name: str
    size: Expr
    pos: Pos


@dataclass(frozen=True)
class Require:
    cond: Expr
    text: str  # the condition as written, for messages
    message: str
    pos: Pos


@dataclass(frozen=True)
class Axis:
    """One axis of an operand: a single index or a group ``(g t)`` (outer first, like einops)."""

    names: tuple[str, ...]
    positions: tuple[Pos, ...]


@dataclass(frozen=True)
class OperandRef:
    name: str
    axes: tuple[Axis, ...]
    pos: Pos


@dataclass(frozen=True)
class Band:
    """``lo <=|< t - u <=|< hi``, stored with inclusive bounds as expressions."""

    lo: Expr
    hi: Expr
    query: str
    key: str
    pos: Pos


@dataclass(frozen=True)
class Score:
    op: str  # "=" or "+="
    operands: tuple[OperandRef, ...]
    band: Band | None
    scale: Expr | None
    pos: Pos


@dataclass(frozen=True)
class Loop:
    var: str
    start: Expr
    stop: Expr
    indices: tuple[IndexDecl, ...]
    lets: tuple[SymbolDecl, ...]
    requires: tuple[Require, ...]
    scores: tuple[Score, ...]
    pos: Pos


Term = Score | Loop


@dataclass
class Program:
    """A parsed structure file, before any size is known."""

    source: str
    doc: str = ""
    symbols: dict[str, SymbolDecl] = field(default_factory=dict)
    indices: dict[str, IndexDecl] = field(default_factory=dict)
    requires: list[Require] = field(default_factory=list)
    summed: dict[str, Pos] = field(default_factory=dict)
    terms: list[Term] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Parser


class Parser:
    """Recursive descent over the token stream; each ``statement_*`` method parses one kind."""

    def __init__(self, text: str, source: str):
        self.tokens = list(tokenize(text))
        self.lines = text.splitlines()
        self.i = 0
        self.nesting = 0  # expressions being parsed inside one another
        self.program = Program(source)

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def at(self, text: str) -> bool:
        return self.tok.kind in ("op", "name") and self.tok.text == text

    def take(self, text: str | None = None, kind: str | None = None, what: str = "") -> Token:
        tok = self.tok
        if (text is not None and not self.at(text)) or (kind is not None and tok.kind != kind):
            wanted = what or (f"'{text}'" if text else kind)
            raise DSLError(f"expected {wanted}, found {describe_token(tok)}", tok.pos)
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def name(self, what: str = "a name") -> Token:
        tok = self.take(kind="name", what=what)
        if tok.text in KEYWORDS:
            raise DSLError(f"expected {what}, found keyword '{tok.text}'", tok.pos)
        return tok

    def end_of_statement(self) -> None:
        if self.tok.kind not in ("newline", "end", "dedent"):
            raise DSLError(f"expected the end of the line, found {describe_token(self.tok)}", self.tok.pos)
        if self.tok.kind == "newline":
            self.i += 1

    # -- program
    def parse(self) -> Program:
        while self.tok.kind != "end":
            if self.tok.kind == "newline":
                self.i += 1
                continue
            if self.tok.kind == "indent":
                raise DSLError("unexpected indent", self.tok.pos)
            self.statement()
        if not self.program.terms:
            raise DSLError("no score: add a line like `score = x[t, i] W[i, j] x[u, j]`", self.tok.pos)
        return self.program

    def statement(self) -> None:
        tok = self.tok
        handler = {
            "doc": self.statement_doc,
            "size": self.statement_symbol,
            "param": self.statement_symbol,
            "let": self.statement_symbol,
            "choice": self.statement_choice,
            "index": self.statement_index,
            "require": self.statement_require,
            "sum": self.statement_sum,
            "score": self.statement_score,
            "for": self.statement_for,
        }.get(tok.text if tok.kind == "name" else "")
        if handler is None:
            raise DSLError(
                f"expected a statement (doc, size, param, let, choice, index, require, sum, score, for), "
                f"found {describe_token(tok)}",
                tok.pos,
            )
        handler()

    def statement_doc(self) -> None:
        start = self.take("doc")
        text = self.take(kind="string", what="a quoted doc line").text[1:-1]
        if self.program.doc:
            raise DSLError("a second doc line: one structure has one doc line", start.pos)
        self.program.doc = text
        self.end_of_statement()

    def declare(self, decl: SymbolDecl) -> None:
        program = self.program
        if decl.name in RESERVED:
            raise DSLError(f"'{decl.name}' is reserved and cannot be a symbol", decl.pos)
        earlier = program.symbols.get(decl.name) or program.indices.get(decl.name)
        if earlier is not None:
            raise DSLError(f"'{decl.name}' is already defined at line {earlier.pos.line}", decl.pos)
        program.symbols[decl.name] = decl

    def statement_symbol(self) -> None:
        kind = self.take(kind="name").text
        name = self.name("a symbol name")
        length = None
        if kind == "param" and self.accept("["):
            length = self.expr()
            self.take("]")
        self.take("=", what=f"'=' and a default value for {name.text}")
        value = self.list_literal() if self.at("[") else self.expr()
        doc = self.optional_string()
        self.declare(SymbolDecl(kind, name.text, value, name.pos, length=length, doc=doc))
        self.end_of_statement()

    def statement_choice(self) -> None:
        self.take("choice")
        name = self.name("a choice name")
        self.take("=")
        options = [self.name("an option name").text]
        while self.accept("|"):
            options.append(self.name("an option name").text)
        doc = self.optional_string()
        self.declare(SymbolDecl("choice", name.text, None, name.pos, choices=tuple(options), doc=doc))
        self.end_of_statement()

    def index_decls(self) -> list[IndexDecl]:
        self.take("index")
        decls = []
        while True:
            name = self.name("an index name")
            self.take(":", what=f"':' and the size of index {name.text}")
            decls.append(IndexDecl(name.text, self.expr(), name.pos))
            if not self.accept(","):
                break
        self.end_of_statement()
        return decls

    def statement_index(self) -> None:
        for decl in self.index_decls():
            earlier = self.program.indices.get(decl.name) or self.program.symbols.get(decl.name)
            if earlier is not None:
                raise DSLError(f"'{decl.name}' is already defined at line {earlier.pos.line}", decl.pos)
            self.program.indices[decl.name] = decl

    def parse_require(self) -> Require:
        start = self.take("require")
        first = self.tok.pos
        cond = self.expr()
        last = self.tok.pos
        text = self.lines[first.line - 1][first.col - 1 : last.col - 1] if last.line == first.line else ""
        message = self.optional_string()
        self.end_of_statement()
        return Require(cond, text.strip(), message, start.pos)

    def statement_require(self) -> None:
        self.program.requires.append(self.parse_require())

    def statement_sum(self) -> None:
        self.take("sum")
        while True:
            tok = self.name("an index name")
            self.program.summed[tok.text] = tok.pos
            if not self.accept(","):
                break
        self.end_of_statement()

    def statement_score(self) -> None:
        self.program.terms.append(self.parse_score())

    def parse_score(self) -> Score:
        start = self.take("score")
        if not (self.at("=") or self.at("+=")):
            raise DSLError(f"expected '=' or '+=' after score, found {describe_token(self.tok)}", self.tok.pos)
        op = self.take(kind="op").text
        operands = [self.operand()]
        while self.tok.kind == "name" and self.tok.text not in ("where", "scale") or self.at("*"):
            self.accept("*")
            operands.append(self.operand())
        band = self.band() if self.accept("where") else None
        scale = self.expr() if self.accept("scale") else None
        self.end_of_statement()
        return Score(op, tuple(operands), band, scale, start.pos)

    def operand(self) -> OperandRef:
        name = self.take(kind="name", what="a tensor like W[i, j]")
        if name.text in KEYWORDS:
            raise DSLError(f"expected a tensor like W[i, j], found keyword '{name.text}'", name.pos)
        self.take("[", what=f"'[' and the axes of {name.text}")
        axes = [self.axis()]
        while self.accept(","):
            axes.append(self.axis())
        self.take("]", what=f"',' or ']' in the axes of {name.text}")
        return OperandRef(name.text, tuple(axes), name.pos)

    def axis(self) -> Axis:
        if self.accept("("):
            tokens = [self.name("an index name")]
            while not self.accept(")"):
                tokens.append(self.name("an index name or ')'"))
        else:
            tokens = [self.name("an index name")]
        return Axis(tuple(t.text for t in tokens), tuple(t.pos for t in tokens))

    def band(self) -> Band:
        start = self.tok.pos
        lo = self.additive()
        lo_strict = self.comparison_op()
        query = self.name("the query's sequence index").text
        self.take("-", what="'-' (a band is written lo <= t - u <= hi)")
        key = self.name("the key's sequence index").text
        hi_strict = self.comparison_op()
        hi = self.additive()
        if lo_strict:
            lo = Binary("+", lo, Num(1, start), start)
        if hi_strict:
            hi = Binary("-", hi, Num(1, start), start)
        return Band(lo, hi, query, key, start)

    def comparison_op(self) -> bool:
        """Parses ``<`` or ``<=``; True when strict."""
        if self.accept("<="):
            return False
        self.take("<", what="'<=' or '<' (a band is written lo <= t - u <= hi)")
        return True

    def statement_for(self) -> None:
        start = self.take("for")
        var = self.name("a loop variable")
        self.take("in")
        first = self.additive()
        self.take("..", what="'..' (loops are written for l in 1..levels:)")
        last = self.additive()
        self.take(":")
        self.take(kind="newline", what="a new line after ':'")
        self.take(kind="indent", what="an indented loop body")
        indices: list[IndexDecl] = []
        lets: list[SymbolDecl] = []
        requires: list[Require] = []
        scores: list[Score] = []
        while self.tok.kind not in ("dedent", "end"):
            if self.at("index"):
                indices.extend(self.index_decls())
            elif self.at("let"):
                self.take("let")
                name = self.name("a symbol name")
                self.take("=")
                lets.append(SymbolDecl("let", name.text, self.expr(), name.pos))
                self.end_of_statement()
            elif self.at("require"):
                requires.append(self.parse_require())
            elif self.at("score"):
                scores.append(self.parse_score())
            else:
                raise DSLError(f"a loop body holds index, let, require and score lines, "
                               f"found {describe_token(self.tok)}", self.tok.pos)  # fmt: skip
        self.accept_dedent()
        if not scores:
            raise DSLError("this loop has no score line", start.pos)
        loop = Loop(var.text, first, last, tuple(indices), tuple(lets), tuple(requires), tuple(scores), start.pos)
        self.program.terms.append(loop)

    def accept_dedent(self) -> None:
        if self.tok.kind == "dedent":
            self.i += 1

    def optional_string(self) -> str:
        return self.take(kind="string").text[1:-1] if self.tok.kind == "string" else ""

    # -- expressions, lowest precedence first
    def expr(self) -> Expr:
        start = self.tok.pos
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise DSLError("this expression is nested too deeply", start)
            expr = self.logical()
        finally:
            self.nesting -= 1
        # evaluating (recursively) a deeper tree would exhaust the stack
        if self.nesting == 0 and max(depth for _, depth in walk(expr)) > MAX_DEPTH:
            raise DSLError("this expression is too long: split it with `let`", start)
        return expr

    def logical(self) -> Expr:
        left = self.negation()
        while self.at("and") or self.at("or"):
            op = self.take(kind="name")
            left = Binary(op.text, left, self.negation(), op.pos)
        return left

    def negation(self) -> Expr:
        if self.at("not"):
            op = self.take("not")
            return Unary("not", self.nested(self.negation), op.pos)
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.additive()
        if self.tok.kind == "op" and self.tok.text in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take(kind="op")
            left = Binary(op.text, left, self.additive(), op.pos)
        return left

    def additive(self) -> Expr:
        left = self.term()
        while self.at("+") or self.at("-"):
            op = self.take(kind="op")
            left = Binary(op.text, left, self.term(), op.pos)
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "//", "%"):
            op = self.take(kind="op")
            left = Binary(op.text, left, self.unary(), op.pos)
        return left

    def unary(self) -> Expr:
        if self.at("-"):
            op = self.take("-")
            return Unary("-", self.nested(self.unary), op.pos)
        return self.power()

    def power(self) -> Expr:
        base = self.atom()
        if self.at("^") or self.at("**"):
            op = self.take(kind="op")
            return Binary("^", base, self.nested(self.unary), op.pos)  # right-associative
        return base

    def nested(self, parse: Callable[[], Expr]) -> Expr:
        """``parse()`` one level deeper: chains like ``- - - 1`` or ``2^2^2`` recurse too."""
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise DSLError("this expression is nested too deeply", self.tok.pos)
            return parse()
        finally:
            self.nesting -= 1

    def atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "int":
            if len(tok.text) > MAX_DIGITS:
                raise DSLError(f"this number has more than {MAX_DIGITS} digits", tok.pos)
            self.i += 1
            return Num(int(tok.text), tok.pos)
        if self.accept("("):
            inner = self.expr()
            self.take(")", what="')'")
            return inner
        if tok.kind == "name" and (tok.text not in KEYWORDS or tok.text in FUNCTIONS):
            self.i += 1
            if self.accept("("):
                if tok.text not in FUNCTIONS:
                    raise DSLError(f"unknown function {tok.text}(); known: {', '.join(sorted(FUNCTIONS))}", tok.pos)
                args = [] if self.at(")") else [self.expr()]
                while self.accept(","):
                    args.append(self.expr())
                self.take(")", what="',' or ')'")
                return Call(tok.text, tuple(args), tok.pos)
            if self.accept("["):
                index = self.expr()
                self.take("]", what="']'")
                return Item(tok.text, index, tok.pos)
            return Name(tok.text, tok.pos)
        raise DSLError(f"expected a number or a name, found {describe_token(tok)}", tok.pos)

    def list_literal(self) -> ListLit:
        start = self.take("[")
        items = [self.expr()]
        while self.accept(","):
            items.append(self.expr())
        self.take("]", what="',' or ']'")
        return ListLit(tuple(items), start.pos)


def describe_token(tok: Token) -> str:
    if tok.kind in ("newline", "end"):
        return "the end of the line" if tok.kind == "newline" else "the end of the file"
    if tok.kind in ("indent", "dedent"):
        return f"an {tok.kind}"
    return f"'{tok.text}'"


def parse(text: str, source: str = "<input>") -> Program:
    """Parses structure text; raises DSLError naming ``source`` and the position."""
    try:
        return Parser(text, source).parse()
    except DSLError as err:
        raise err.located(source) from None
