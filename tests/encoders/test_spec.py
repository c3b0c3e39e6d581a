"""The encoder spec grammar kind[:name][@mode][,key=value…]: every spec used so far parses to the
same canonical string, str() and parse() round-trip, malformed specs raise a clear ValueError."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lookalike.encoders import get_encoder
from lookalike.encoders.spec import EncoderSpec

# (spec as written, parsed fields, canonical string = the encoder name stored in catalogs)
SPECS = [
    ("effnet-lite0", ("effnet-lite0", None, None, {}), "effnet-lite0"),
    ("effnet-lite0:", ("effnet-lite0", None, None, {}), "effnet-lite0"),
    ("effnet-lite0:weights=/a@b.pth", ("effnet-lite0", None, None, {"weights": "/a@b.pth"}),
     "effnet-lite0:weights=/a@b.pth"),
    ("effnet-lite0:pool=gem,resize=pad", ("effnet-lite0", None, None, {"pool": "gem", "resize": "pad"}),
     "effnet-lite0:pool=gem,resize=pad"),
    ("effnet-lite0,runtime=onnx-int8", ("effnet-lite0", None, None, {"runtime": "onnx-int8"}),
     "effnet-lite0:runtime=onnx-int8"),
    ("effnet-lite0:/w/ft.pth,colour=0.2", ("effnet-lite0", "/w/ft.pth", None, {"colour": "0.2"}),
     "effnet-lite0:/w/ft.pth,colour=0.2"),
    ("effnet-lite0-colour:0.3", ("effnet-lite0-colour", "0.3", None, {}), "effnet-lite0-colour:0.3"),
    ("vae:shoes@loglik", ("vae", "shoes", "loglik", {}), "vae:shoes@loglik"),
    ("hvae:h1@loglik", ("hvae", "h1", "loglik", {}), "hvae:h1@loglik"),
    ("metric:by-shape,runtime=torch", ("metric", "by-shape", None, {"runtime": "torch"}),
     "metric:by-shape,runtime=torch"),
    ("vae:v@z,seed=3", ("vae", "v", "z", {"seed": "3"}), "vae:v@z,seed=3"),
    ("vae@z", ("vae", None, "z", {}), "vae@z"),
    (" tiny ", ("tiny", None, None, {}), "tiny"),
    ("C-drive:C:/weights.pth", ("C-drive", "C:/weights.pth", None, {}), "C-drive:C:/weights.pth"),
]


@pytest.mark.parametrize("text, fields, canonical", SPECS)
def test_known_specs_parse_to_their_canonical_string(text, fields, canonical):
    spec = EncoderSpec.parse(text)
    assert (spec.kind, spec.name, spec.mode, spec.options) == fields
    assert str(spec) == canonical
    assert EncoderSpec.parse(canonical) == spec


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("   ", "empty"), (":name", "invalid encoder kind"), ("vae:@z", "nothing between"),
    ("vae:x@", "empty mode"), ("vae@z:x", "comes before"), ("effnet-lite0,pool", "key=value"),
    ("effnet-lite0,=gem", "key=value"), ("effnet-lite0:pool=gem,pool=avg", "given twice"),
    ("vae:a@b@c", "invalid encoder mode"), ("vae:x,,k=v", "key=value"), ("bad kind", "invalid encoder kind"),
    ("vae:x@a=b", "invalid encoder mode"),
])
def test_malformed_specs_raise_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        EncoderSpec.parse(text)


def test_fields_are_validated_so_str_always_reparses():
    for bad in [dict(name="a,b"), dict(name="a=b"), dict(name=""), dict(mode="a b"), dict(options={"k": "a,b"}),
                dict(options={"1k": "v"})]:
        with pytest.raises(ValueError):
            EncoderSpec("vae", **bad)


_token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)
_name = st.from_regex(r"[A-Za-z0-9/._~:-][A-Za-z0-9/._~: -]{0,12}[A-Za-z0-9/._~:-]|[A-Za-z0-9/._~-]", fullmatch=True)
_value = st.from_regex(r"([A-Za-z0-9/._:@=-][A-Za-z0-9/._:@= -]{0,8}[A-Za-z0-9/._:@=-])?", fullmatch=True)
_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


# No deadline: the machine is shared, a slow example is not a failure of the grammar.
_relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_relaxed
@given(kind=_token, name=st.none() | _name, mode=st.none() | _token,
       options=st.dictionaries(_key, _value, max_size=4))
def test_str_and_parse_round_trip(kind, name, mode, options):
    spec = EncoderSpec(kind, name, mode, options)
    text = str(spec)
    again = EncoderSpec.parse(text)
    assert again == spec
    assert list(again.options) == list(options)  # option order is part of the canonical string
    assert str(again) == text


@_relaxed
@given(st.text(max_size=30))
def test_parse_never_fails_other_than_with_value_error(text):
    try:
        spec = EncoderSpec.parse(text)
    except ValueError:
        return
    assert EncoderSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text, name", [
    ("colour-hist", "colour-hist"), ("tiny", "tiny"),
    ("effnet-lite0:pool=gem,resize=pad,runtime=torch", "effnet-lite0:pool=gem,resize=pad,runtime=torch"),
    ("effnet-lite0,runtime=torch", "effnet-lite0:runtime=torch"),
    ("effnet-lite0-colour:0.3,runtime=torch", "effnet-lite0-colour:0.3,runtime=torch"),
])
def test_encoders_are_named_by_their_canonical_spec(text, name):
    assert get_encoder(text).name == name


def test_kinds_refuse_what_they_do_not_take():
    with pytest.raises(ValueError, match="no name, mode or options"):
        get_encoder("tiny:x")
    with pytest.raises(ValueError, match="no retrieval modes"):
        get_encoder("effnet-lite0@z")
    with pytest.raises(ValueError, match="unknown effnet-lite0 option"):
        get_encoder("effnet-lite0,size=3")
    with pytest.raises(KeyError, match="unknown encoder"):
        get_encoder("nope:x")
