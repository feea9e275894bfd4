import pytest

from stator.errors import AddressError
from stator.runtime.address import EndpointAddress, model_endpoint_name


def test_parse_with_and_without_scheme() -> None:
    a = EndpointAddress.parse("dyn://dynamo.backend.generate")
    assert (a.namespace, a.component, a.endpoint) == ("dynamo", "backend", "generate")
    assert EndpointAddress.parse("ns.comp.ep") == EndpointAddress("ns", "comp", "ep")


def test_format_round_trips() -> None:
    text = "dyn://ns-1.comp_2.generate_x"
    assert str(EndpointAddress.parse(text)) == text
    assert EndpointAddress.parse(text).path == "ns-1/comp_2/generate_x"


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("dyn://.comp.ep", "namespace"),
        ("dyn://ns..ep", "component"),
        ("dyn://ns.comp.", "endpoint"),
        ("dyn://ns.co mp.ep", "component"),
        ("dyn://ns.comp.e/p", "endpoint"),
        ("dyn://ns.comp", "component"),
        ("http://ns.comp.ep", "scheme"),
    ],
)
def test_parse_errors_name_the_bad_part(text: str, part: str) -> None:
    with pytest.raises(AddressError) as info:
        EndpointAddress.parse(text)
    assert info.value.param == part
    assert part in str(info.value) or part == "scheme" or "part(s)" in str(info.value)


def test_model_endpoint_name_matches_design_example() -> None:
    assert (
        model_endpoint_name("Qwen/Qwen2.5-7B-Instruct")
        == "generate_qwen_qwen2_5-7b-instruct_0311af13"
    )


def test_model_endpoint_name_truncates_slug_to_40_chars() -> None:
    name = "A" * 50 + "/x"
    out = model_endpoint_name(name)
    slug = out.split("_")[1]
    assert slug == "a" * 40
    assert EndpointAddress.parse(f"ns.comp.{out}").endpoint == out
