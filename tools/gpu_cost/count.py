"""count.py: instructions per element of each CUDA kernel, read from its sm_90 machine code
(nvdisasm's SASS) or, when no disassembler is at hand, from its PTX. Part of tools/gpu_cost
(docs/BENCH.md, "Predicted"); standard library only.

How a kernel is counted (the same rules for SASS and PTX):
- Loops are the back edges of the control flow (a branch to an earlier instruction); a loop
  is the address range from its target to the branch, nested by containment.
- Every instruction of a loop's own body (its range less the loops nested in it) counts
  once, whichever branch arm it is on: what a warp issues when its threads take every path.
  The instructions outside every loop run once per thread (the prologue).
- An inner source loop (found by the source line of its back edge: -lineinfo) runs the trip
  count the launch model gives it. nvcc unrolls it by u (the constant its counter steps by,
  over the source loop's own step) and leaves the remainder either as a loop of step 1
  (then every iteration costs the cheapest machine loop's body / u) or straight-line in the
  enclosing body on the loop's source lines (then it holds u - 1 iterations and runs
  T mod u of them, the unrolled loop floor(T / u) times).
- The grid-stride loop (a top-level loop whose back edge is on a FOR_EACH_ELEMENT or
  blockIdx/gridDim line) is one element per iteration, not unrolled; when nvcc versions
  it on an argument (dropout's train flag, conv_out's relu), the costliest is taken.
- 64-bit integer division and remainder: nvcc tests whether both operands fit in 32 bits
  and then runs a 32-bit sequence inline, else calls a 64-bit subroutine. Element counts
  here are below 2^32, so the inline arm is what runs: it is counted, the call arm is not;
  the sites are counted, and the cost if every one took the subroutine is given beside.
  Other slow-path subroutines (special-value reciprocals) are never counted.
In PTX, where ptxas has not yet expanded them, a 64-bit div/rem costs what the SASS of
nvcc 13 at sm_90 spends on it (PTX_DIV64_FAST / PTX_DIV64_SLOW), and PTX counts run rougher
than SASS counts (register moves and address arithmetic ptxas folds away are counted)."""

import os
import re
from dataclasses import dataclass, field

# what one 64-bit unsigned division or remainder costs in sm_90 SASS (nvcc 13.0): the test
# on the operands' high words, the inline 32-bit sequence, the join (fast); or the call
# arm and the subroutine (slow). Measured from layers_cuda.cu's im2col_chunk_kernel.
PTX_DIV64_FAST = 24
PTX_DIV64_SLOW = 66
PTX_DIV32 = 18


@dataclass
class Instr:
    idx: int                  # position in the function (SASS: address / 16)
    op: str                   # opcode with modifiers, e.g. "IMAD.WIDE.U32", "ld.global.f32"
    text: str                 # the whole instruction
    line: tuple = None        # (file basename, line) of the innermost source position
    chain: tuple = ()         # that position, then the call sites it was inlined at, inward
                              # out: ((file, line), ...)
    target: str = None        # branch target label
    call: str = None          # called subroutine
    cond: bool = False        # predicated branch


@dataclass
class Loop:
    head: int
    tail: int                 # the back-edge branch
    line: tuple = None        # source line of the back edge
    children: list = field(default_factory=list)
    own: int = 0              # instructions of its own body (32-bit division arms)
    own64: int = 0            # the same with every division site on the 64-bit subroutine
    div_sites: int = 0
    unroll: int = 1
    by_line: dict = field(default_factory=dict)   # an Instr's chain -> (own, own64, xu)
    loads: int = 0
    stores: int = 0


@dataclass
class Kernel:
    name: str                 # demangled base name, e.g. "im2col_chunk_kernel"
    mangled: str
    source: str               # "sass" or "ptx"
    static: int = 0           # every instruction of the kernel once (subroutines excluded)
    prologue: int = 0         # outside every loop: once per thread
    loops: list = field(default_factory=list)   # top-level loops
    sub_sizes: dict = field(default_factory=dict)
    top: Loop = None          # the code outside every loop (its by_line), loops as children
    div_fast: int = 0         # instructions of one inline 32-bit division arm
    div_slow: int = 0         # instructions of one call arm + subroutine

    def element_loops(self, srcdir):
        """The grid-stride loop's versions: the top-level loops whose back edge is on a
        grid-stride line (FOR_EACH_ELEMENT, or a for loop over blockIdx and gridDim)."""
        return [lp for lp in self.loops
                if re.search(r"FOR_EACH_ELEMENT|gridDim|blockIdx", source_line_text(srcdir, lp.line))]


def demangle_base(mangled):
    """_Z19im2col_chunk_kernelPfPKfiiiiiiiii -> im2col_chunk_kernel (names of free functions)."""
    m = re.match(r"_Z(\d+)(\w+)", mangled)
    if not m:
        return mangled
    n = int(m.group(1))
    return m.group(2)[:n]


def _is_load(op, sass):
    if sass:
        return op.split(".")[0] in ("LDG", "LD", "LDS", "LDL")
    return op.startswith("ld.") and not op.startswith("ld.param")


def _is_xu(op, sass):
    """Instructions of the multi-function unit (16 lanes per SM per cycle on sm_90)."""
    if sass:
        return op.split(".")[0] in ("MUFU", "I2F", "F2I", "F2F", "I2I", "FRND", "I2FP", "F2IP")
    p = op.split(".")
    if p[0] == "cvt":  # float <-> integer conversions only (widenings are ALU work)
        kinds = [t[0] for t in p[1:] if re.fullmatch(r"[fsub]\d+", t)]
        return len(kinds) == 2 and (kinds[0] == "f") != (kinds[1] == "f")
    return p[0] in ("rcp", "ex2", "lg2", "sin", "cos", "rsqrt") or op.startswith("sqrt.approx")


def _is_store(op, sass):
    if sass:
        return op.split(".")[0] in ("STG", "ST", "STS", "STL")
    return op.startswith("st.") and not op.startswith("st.param")


# ---- SASS ------------------------------------------------------------------------------

# where each source file named by the line information is (basename -> path as compiled)
SOURCE_PATHS = {}

_SASS_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_SASS_LABEL = re.compile(r"^\s*(\.L_x_\d+|\$[^:\s]+|\.text\.\S+|_Z\w+):\s*$")
_SASS_LINE = re.compile(r'//## File "([^"]+)", line (\d+)(?: inlined at "([^"]+)", line (\d+))?')


def parse_sass(text):
    """nvdisasm -c -g output -> {mangled kernel: (instrs, labels, subroutine ranges)}."""
    funcs = {}
    parts = re.split(r"//-+ \.text\.(\S+) -+", text)
    for k in range(1, len(parts), 2):
        name, body = parts[k], parts[k + 1]
        instrs, labels, pending, subs = [], {}, [], {}
        line, chain, fresh = None, [], True
        cur_sub = None
        for raw in body.splitlines():
            m = _SASS_LINE.search(raw)
            if m:  # the first position after an instruction is the innermost (inlined) one,
                # the ones after it the call sites it was inlined at
                # (nvdisasm -gi: "... inlined at FILE, line N", one level a line)
                here = [(m.group(1), m.group(2))] + ([(m.group(3), m.group(4))] if m.group(3)
                                                     else [])
                for path, num in here:
                    q = (os.path.basename(path), int(num))
                    SOURCE_PATHS.setdefault(q[0], os.path.normpath(path))
                    if fresh:
                        line, chain, fresh = q, [], False
                    if not chain or chain[-1] != q:
                        chain.append(q)
                continue
            m = _SASS_LABEL.match(raw)
            if m:
                lab = m.group(1)
                pending.append(lab)
                if lab.startswith("$__internal"):
                    cur_sub = lab
                continue
            m = _SASS_INSTR.match(raw)
            if not m:
                continue
            fresh = True
            addr = int(m.group(1), 16) // 16
            text_i = m.group(2)
            for lab in pending:
                labels[lab] = addr
            pending = []
            body_i = re.sub(r"^@!?U?P[T0-9]+\s+", "", text_i)
            op = body_i.split()[0] if body_i.split() else ""
            ins = Instr(addr, op, text_i, line, tuple(chain))
            ins.cond = text_i.startswith("@")
            tm = re.search(r"`\(([^)]+)\)", text_i)
            if op.startswith("BRA") and tm:
                ins.target = tm.group(1)
                if re.match(r"BRA\S*\s+!?U?P\d", body_i):
                    ins.cond = True
            if op.startswith("CALL") and tm:
                ins.call = tm.group(1)
            if cur_sub:
                subs.setdefault(cur_sub, []).append(addr)
            instrs.append(ins)
        funcs[name] = (instrs, labels, subs)
    return funcs


# ---- PTX -------------------------------------------------------------------------------

_PTX_ENTRY = re.compile(r"^\.visible \.entry (\w+)\(|^\.entry (\w+)\(|^\.weak \.entry (\w+)\(")


def parse_ptx(text):
    """nvcc -ptx -lineinfo output -> {mangled kernel: (instrs, labels, {})}."""
    files = {}
    for m in re.finditer(r'^\s*\.file\s+(\d+)\s+"([^"]+)"', text, re.M):
        files[m.group(1)] = os.path.basename(m.group(2))
        SOURCE_PATHS.setdefault(files[m.group(1)], os.path.normpath(m.group(2)))
    funcs = {}
    name = None
    instrs, labels, pending, line, chain = [], {}, [], None, []
    depth = 0
    for raw in text.splitlines():
        s = raw.strip()
        m = _PTX_ENTRY.match(s)
        if m:
            name = m.group(1) or m.group(2) or m.group(3)
            instrs, labels, pending, line, chain, depth = [], {}, [], None, [], 0
            continue
        if name is None:
            continue
        # a scope opened and closed on one line holds an instruction (nvcc writes the bf16
        # conversion as "{  cvt.rn.bf16.f32 %rs1, %f1;}"): counted, the depth unchanged
        closes = 0
        if s.startswith("{"):
            depth += 1
            s = s[1:].strip()
            if not s:
                continue
            if s.endswith("}") and s.count("}") > s.count("{"):
                s, closes = s[:-1].strip(), 1
        if s.startswith("}"):
            depth -= 1
            if depth == 0:
                funcs[name] = (instrs, labels, {})
                name = None
            continue
        if s.startswith(".loc"):
            p = s.split()
            line = (files.get(p[1], p[1]), int(p[2].rstrip(",")))
            # ".loc 1 42 3, function_name ..., inlined_at 2 10 1": the first pair is innermost
            # (PTX names one inlined_at level, so --ptx chains stop at the first call site)
            chain = [line] + [(files.get(f, f), int(n)) for f, n in
                              re.findall(r"inlined_at\s+(\d+)\s+(\d+)", s)]
            continue
        depth -= closes
        if not s or s.startswith("//") or s.startswith("."):
            continue
        m = re.match(r"^(\$?\w+):$", s)
        if m:
            pending.append(m.group(1))
            continue
        s = s.split("//")[0].strip().rstrip(";")
        pred = re.match(r"^@!?%\w+\s+", s)
        body = s[pred.end():] if pred else s
        op = body.split()[0] if body.split() else ""
        ins = Instr(len(instrs), op, s, line, tuple(chain))
        for lab in pending:
            labels[lab] = ins.idx
        pending = []
        if op.startswith("bra"):
            ins.target = body.split()[-1].rstrip(";")
            ins.cond = bool(pred)
        if op.startswith("call"):
            cm = re.search(r"(\w+),\s*\(", body) or re.search(r"call\S*\s+(\w+)", body)
            ins.call = cm.group(1) if cm else "?"
        instrs.append(ins)
    return funcs


def _ptx_weight(op):
    """Machine instructions one PTX instruction stands for (ptxas-expanded ones)."""
    base = op.split(".")
    if base[0] in ("div", "rem"):
        if "u64" in base or "s64" in base:
            return PTX_DIV64_FAST, PTX_DIV64_SLOW, 1
        if "u32" in base or "s32" in base:
            return PTX_DIV32, PTX_DIV32, 0
    return 1, 1, 0


# ---- counting --------------------------------------------------------------------------

def _find_loops(instrs, labels):
    loops = []
    for ins in instrs:
        if ins.target and ins.target in labels:
            h = labels[ins.target]
            if h < ins.idx:
                loops.append(Loop(h, ins.idx, ins.line))
    # loops sharing a head are one loop (several back edges): keep the widest
    byhead = {}
    for lp in loops:
        if lp.head not in byhead or lp.tail > byhead[lp.head].tail:
            byhead[lp.head] = lp
    loops = sorted(byhead.values(), key=lambda lp: (lp.head, -lp.tail))
    # loops that overlap without nesting (a rotated loop in PTX) are taken as one
    merged = True
    while merged:
        merged = False
        for a in loops:
            for b in loops:
                if a is not b and a.head < b.head <= a.tail < b.tail:
                    a.tail = b.tail
                    a.line = b.line if b.line and b.line[0].endswith(".cu") else a.line
                    loops.remove(b)
                    merged = True
                    break
            if merged:
                break
    top = []
    stack = []
    for lp in loops:
        while stack and not (stack[-1].head <= lp.head and lp.tail <= stack[-1].tail):
            stack.pop()
        (stack[-1].children if stack else top).append(lp)
        stack.append(lp)
    return top


def _division_arms(instrs, labels, sass):
    """Instruction indices to leave out of the 32-bit count (call arms, slow-path calls),
    those to leave out of the 64-bit count (inline arms), and the division call sites."""
    skip32, skip64, sites = set(), set(), []
    if not sass:
        return skip32, skip64, sites
    for k, ins in enumerate(instrs):
        if not ins.call:
            continue
        is_div = re.search(r"(div|rem)_[us]64", ins.call) is not None
        # the guard: the nearest conditional branch before the call that jumps past it
        g = k - 1
        while g >= 0 and not (instrs[g].op.startswith("BRA") and instrs[g].cond and
                              labels.get(instrs[g].target, -1) > ins.idx):
            g -= 1
        if g < 0 or k - g > 8:
            continue
        past = labels[instrs[g].target]
        # a division: call arm, "BRA join", then the inline arm from `past` to join
        j = next((x for x in instrs[k + 1:] if x.idx < past and x.op.startswith("BRA")
                  and not x.cond), None)
        if j is not None:
            join = labels.get(j.target, past)
            call_arm = set(range(instrs[g].idx + 1, j.idx + 1))
            inline_arm = set(range(past, join))
        else:  # a slow path beside inline code that precedes the guard
            call_arm = set(range(instrs[g].idx + 1, past))
            inline_arm = set()
        skip32 |= call_arm
        if is_div and inline_arm:
            skip64 |= inline_arm
            sites.append((ins.idx, ins.call, len(call_arm), len(inline_arm)))
        else:
            skip64 |= call_arm
    return skip32, skip64, sites


_SASS_REG = r"(U?R\d+)"


def _imm(tok):
    tok = tok.strip()
    try:
        v = int(tok, 0)
    except ValueError:
        return None
    return v - (1 << 32) if v >= 1 << 31 else v


def _loop_step(lp, instrs, sass):
    """The constant the loop's counter moves by per machine iteration (1 when not found):
    the register the back edge's predicate compares, or the one it is a constant away from,
    updated in the loop by itself plus a constant."""
    body = [i for i in instrs if lp.head <= i.idx <= lp.tail]
    if not body:
        return 1
    br = body[-1]
    pm = re.match(r"@(!?)(%?\w+)", br.text) if br.text.startswith("@") else None
    if sass and not pm:
        pm = re.search(r"BRA\S*\s+!?(U?P\d)", br.text)
    if not pm:
        return 1
    pred = pm.group(pm.lastindex)
    srcs = []
    for ins in reversed(body[:-1]):
        ops = [t.strip() for t in ins.text.split(None, 1)[-1].split(",")] if " " in ins.text else []
        if sass and ins.op.startswith(("ISETP", "FSETP")) and ops and ops[0] == pred:
            srcs = [o for o in ops[2:4] if re.fullmatch(_SASS_REG, o)]
            break
        if not sass and ins.op.startswith("setp") and ops and ops[0].split()[-1] == pred:
            srcs = [o.split()[-1] for o in ops[1:3]]
            break
    written = set()
    for ins in body:
        t = re.sub(r"^@!?\S+\s+", "", ins.text).split(None, 1)
        if len(t) == 2:
            written.add(t[1].split(",")[0].strip().replace(".reuse", "").split()[-1])

    def step_of(reg, hops):
        for ins in body:
            txt = re.sub(r"^@!?\S+\s+", "", ins.text)
            parts = txt.split(None, 1)
            if len(parts) < 2:
                continue
            ops = [o.strip().replace(".reuse", "") for o in parts[1].split(",")]
            if not ops or ops[0].split()[-1] != reg:
                continue
            if sass and ins.op in ("VIADD", "IADD3") and len(ops) >= 3:
                a, c = ops[1], _imm(ops[2])
                if c is not None and a == reg and (ins.op == "VIADD" or ops[3:4] == ["RZ"]):
                    return abs(c)
                if c is not None and hops and re.fullmatch(_SASS_REG, a):
                    return step_of(a, hops - 1)
            # reg = a + b with b fixed in the loop (the trip count's offset): a's step
            two = None
            if sass and ins.op == "IMAD.IADD" and len(ops) == 4 and _imm(ops[2]) == 1:
                two = (ops[1], ops[3])
            elif sass and ins.op == "IADD3" and len(ops) == 4 and ops[3] == "RZ":
                two = (ops[1], ops[2])
            if two and hops and all(re.fullmatch(_SASS_REG, o) for o in two):
                for a, b in (two, two[::-1]):
                    if b not in written:
                        st = step_of(a, hops - 1)
                        if st:
                            return st
            if not sass and ins.op.startswith(("add.s32", "add.u32", "add.s64")) and len(ops) == 3:
                a, c = ops[1], _imm(ops[2])
                if c is not None and a == reg:
                    return abs(c)
                if c is not None and hops:
                    return step_of(a, hops - 1)
        return None
    for r in srcs:
        st = step_of(r, 1)
        if st:
            return st
    return 1


def _count_loop(lp, instrs, sass, skip32, skip64, site_at, sub_sizes):
    inner = [(c.head, c.tail) for c in lp.children]
    for ins in instrs:
        if ins.idx < lp.head or ins.idx > lp.tail:
            continue
        if any(h <= ins.idx <= t for h, t in inner):
            continue
        if ins.op == "NOP" or ins.op == "nop":
            continue
        w32, w64, d = (1, 1, 0) if sass else _ptx_weight(ins.op)
        n32 = w32 if ins.idx not in skip32 else 0
        n64 = w64 if ins.idx not in skip64 else 0
        if ins.idx in site_at:
            d += 1
            n64 += sub_sizes.get(site_at[ins.idx], 0)
        lp.own += n32
        lp.own64 += n64
        lp.div_sites += d
        nxu = n32 if _is_xu(ins.op, sass) else 0
        key = ins.chain or (ins.line,)
        c32, c64, cxu = lp.by_line.get(key, (0, 0, 0))
        lp.by_line[key] = (c32 + n32, c64 + n64, cxu + nxu)
        lp.loads += _is_load(ins.op, sass)
        lp.stores += _is_store(ins.op, sass)
    lp.unroll = _loop_step(lp, instrs, sass)
    for c in lp.children:
        _count_loop(c, instrs, sass, skip32, skip64, site_at, sub_sizes)


def count_function(mangled, instrs, labels, subs, sass):
    k = Kernel(demangle_base(mangled), mangled, "sass" if sass else "ptx")
    sub_start = min((min(v) for v in subs.values()), default=None)
    body = [i for i in instrs if sub_start is None or i.idx < sub_start]
    sub_sizes = {}
    for name, addrs in subs.items():
        sub_sizes[name] = len([i for i in instrs if i.idx in set(addrs) and i.op != "NOP"])
    k.sub_sizes = sub_sizes
    # the trailing "BRA self" after the last EXIT never runs
    body = [i for i in body if not (i.target and labels.get(i.target) == i.idx)]
    skip32, skip64, sites = _division_arms(body, labels, sass)
    site_at = {s[0]: s[1] for s in sites}
    if sites:
        k.div_fast = max(s[3] for s in sites) + 3
        k.div_slow = max(s[2] + sub_sizes.get(s[1], 0) for s in sites) + 3
    elif not sass:
        k.div_fast, k.div_slow = PTX_DIV64_FAST, PTX_DIV64_SLOW
    k.static = sum(1 for i in body if i.op not in ("NOP", "nop") and i.idx not in skip32)
    k.loops = _find_loops(body, labels)
    for lp in k.loops:
        _count_loop(lp, body, sass, skip32, skip64, site_at, sub_sizes)
    # the code outside every loop, as a loop of one iteration around the top-level loops
    k.top = Loop(-1, 1 << 30)
    k.top.children = []
    _count_loop(k.top, [i for i in body if not any(lp.head <= i.idx <= lp.tail
                                                       for lp in k.loops)],
                sass, skip32, skip64, site_at, sub_sizes)
    k.top.unroll = 1
    k.prologue = k.top.own
    return k


def count_text(text, sass):
    funcs = parse_sass(text) if sass else parse_ptx(text)
    out = {}
    for mangled, (instrs, labels, subs) in funcs.items():
        if not instrs:
            continue
        k = count_function(mangled, instrs, labels, subs, sass)
        out[k.name] = k
    return out


# ---- per-element cost given trip counts --------------------------------------------------

def _source_lines(srcdir, base):
    cache = _source_lines.__dict__.setdefault("cache", {})
    if base not in cache:
        found = SOURCE_PATHS.get(base)
        if found and not os.path.isfile(found):
            found = None  # compiled elsewhere (a carried build): look under srcdir
        for root, _, names in ([] if found else os.walk(srcdir)):
            if base in names:
                found = os.path.join(root, base)
                break
        cache[base] = open(found, encoding="utf-8").read().splitlines() if found else []
    return cache[base]


def source_line_text(srcdir, line):
    """The text of source line (basename, n), found under srcdir."""
    if line is None:
        return ""
    lines = _source_lines(srcdir, line[0])
    return lines[line[1] - 1].strip() if 0 < line[1] <= len(lines) else ""


def loop_extent(srcdir, line):
    """Last source line of the statement that starts at `line` (a for loop): its braces
    matched, or its single statement (itself possibly a for or an if with braces)."""
    lines = _source_lines(srcdir, line[0])
    if not 0 < line[1] <= len(lines):
        return line[1]
    text = "\n".join(lines[line[1] - 1:line[1] + 200])
    k = text.find("(")
    if k < 0:
        return line[1]
    depth, i = 0, k
    while i < len(text):  # the for header's parentheses
        depth += text[i] == "("
        depth -= text[i] == ")"
        i += 1
        if depth == 0:
            break
    def stmt_end(i):
        while i < len(text) and text[i].isspace():
            i += 1
        if text.startswith("{", i):
            d = 0
            while i < len(text):
                d += text[i] == "{"
                d -= text[i] == "}"
                i += 1
                if d == 0:
                    return i
            return i
        m = re.match(r"(for|if|while)\s*\(", text[i:])
        if m:
            j, d = i + m.end() - 1, 0
            while j < len(text):
                d += text[j] == "("
                d -= text[j] == ")"
                j += 1
                if d == 0:
                    break
            return stmt_end(j)
        j = text.find(";", i)
        return j + 1 if j >= 0 else len(text)
    end = stmt_end(i)
    return line[1] + text[:end].count("\n")


def _loop_cost(lp, trips, srcdir, mode, used):
    """Instructions of one iteration of machine loop lp, its nested source loops at their
    trip counts. trips: [(regex on the source line of a loop's back edge, iterations)].
    A nested source loop costs: its setup and remainder code (this loop's instructions on
    the nested loop's source lines) and its machine loops. Machine loops that are versions
    of the source loop (none unrolled, or holding different nested loops) cost the
    costliest. Else, with a machine loop of step 1 among them (a remainder loop), the
    setup runs once and the cheapest per-iteration loop takes every iteration; otherwise
    the remainder code holds u - 1 iterations straight-line and runs T mod u of them, the
    unrolled loop floor(T / u) times."""
    k = mode
    groups = {}
    for c in lp.children:  # machine loops of one source loop are alternatives
        groups.setdefault(c.line, []).append(c)
    spans = {line: (line[1], loop_extent(srcdir, line)) for line in groups if line}
    own = 0.0
    rest = {line: 0.0 for line in groups}
    for chain, counts in lp.by_line.items():
        # an instruction is a nested loop's when its position, or a call site it was inlined
        # at, lies in the loop's source lines: the innermost such position decides
        owner = next((g for pos in chain if pos for g, (a, b) in spans.items()
                      if pos[0] == g[0] and a <= pos[1] <= b), None)
        if owner is None:
            own += counts[k]
        else:
            rest[owner] += counts[k]
    for line, alts in groups.items():
        text = source_line_text(srcdir, line)
        n, step = None, 1
        for pat, t, *st in trips:
            if re.search(pat, text):
                n, step = t, (st[0] if st else 1)
                used.add(pat)
                break
        if n is None:
            n = 1  # an inner loop the launch model does not know: one iteration
            used.add("?" + text)
        costs = [(_loop_cost(c, trips, srcdir, mode, used), max(1, c.unroll // step))
                 for c in alts]
        nested = {frozenset(g.line for g in c.children) for c in alts}
        if len(costs) > 1 and (len(nested) > 1 or all(u == 1 for _, u in costs)):
            # versions of one loop rather than an unrolled loop and its remainder (which
            # hold the same nested loops, one of them unrolled): nvcc specialised the loop
            # on a value fixed for it (an inner loop that might be empty, whose work it
            # then hoists or drops). The costliest per iteration, as for the grid-stride
            # loop's versions.
            own += rest[line] + n * max(c / u for c, u in costs)
        elif any(u == 1 for _, u in costs):
            own += rest[line] + n * min(c / u for c, u in costs)
        else:
            c, u = min(costs, key=lambda cu: cu[0] / cu[1])
            tail = n % u
            own += (n // u) * c + rest[line] * min(1.0, max(tail, 1) / (u - 1))
    return own


def element_cost(k, trips, srcdir, mode=0):
    """(instructions per element, per-thread instructions outside the element loop, inner
    loops the trips did not name) of kernel k: the costliest version of its grid-stride
    loop. A kernel without one (the softmax: a block per sample) has per-thread cost only:
    its loops are inner loops with trips. mode: 0 instructions (32-bit division arms), 1 the same with
    every division on the 64-bit subroutine, 2 the XU instructions among mode 0's."""
    used = set()
    el = k.element_loops(srcdir)
    per = max((_loop_cost(lp, trips, srcdir, mode, used) for lp in el), default=0.0)
    top = Loop(-1, 1 << 30, by_line=k.top.by_line)
    top.children = [lp for lp in k.loops if lp not in el]
    pro = _loop_cost(top, trips, srcdir, mode, used)
    unknown = sorted(u[1:] for u in used if u.startswith("?"))
    return per, pro, unknown


def describe(k, srcdir, depth=0, loops=None):
    """Lines explaining how kernel k was counted (for --explain)."""
    out = []
    if loops is None:
        out.append(f"{k.name} ({k.source}): {k.static} instructions, prologue {k.prologue}, "
                   f"one 64-bit division: {k.div_fast} inline / {k.div_slow} via the subroutine")
        loops = k.loops
    for lp in loops:
        out.append("  " * (depth + 1) +
                   f"loop [{lp.head}..{lp.tail}] own {lp.own} (64-bit {lp.own64}), unroll "
                   f"{lp.unroll}, loads {lp.loads}, stores {lp.stores}, division sites "
                   f"{lp.div_sites}; back edge {lp.line}: {source_line_text(srcdir, lp.line)[:60]}")
        out += describe(k, srcdir, depth + 1, lp.children)
    return out
