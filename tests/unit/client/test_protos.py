"""Our protos against the upstream ones from tensorflow-serving-api: same numbers, same bytes.

Upstream descriptors are the truth. Every message we define is compared field by field, then
filled with values (each oneof branch in turn) and sent both ways through the wire.
"""

from __future__ import annotations

import importlib

import pytest
from google.protobuf import any_pb2, descriptor_pool, unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from orchestrator.protocol import methods as _methods
from orchestrator.protos import apis_pb2, example_pb2, meta_graph_pb2, tensor_pb2
from tests.helpers.requires import require_module

UPSTREAM_MODULES = (
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.apis.inference_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
)

OURS = {
    tensor_pb2: "tensorflow",
    example_pb2: "tensorflow",
    meta_graph_pb2: "tensorflow",
    apis_pb2: "tensorflow.serving",
}

# Upstream fields we leave out on purpose (protobuf keeps them as unknown fields).
OMITTED = {
    "tensorflow.TensorProto": {"resource_handle_val", "variant_val"},
    "tensorflow.TensorInfo": {"composite_tensor"},
    "tensorflow.SignatureDef": {"defaults"},
    "tensorflow.serving.PredictRequest": {
        "predict_streamed_options",
        "client_id",
        "request_options",
    },
    "tensorflow.serving.ReloadConfigResponse": {"metric"},
    "tensorflow.serving.FileSystemStoragePathSourceConfig": {
        "servables",
        "file_system_poll_wait_seconds",
        "fail_if_zero_versions_at_startup",
        "servable_versions_always_present",
    },
}
# Same varint on the wire, an enum upstream and an int in ours.
ENUM_AS_INT = {"tensorflow.serving.StatusProto.error_code"}


@pytest.fixture(scope="module")
def upstream_pool():
    require_module("tensorflow_serving")
    for name in UPSTREAM_MODULES:
        importlib.import_module(name)
    return descriptor_pool.Default()


def _upstream_name(full_name: str) -> str:
    ours = full_name.removeprefix("orchestrator.tfs.")
    for module, package in OURS.items():
        top = ours.split(".")[0]
        if (
            top in module.DESCRIPTOR.message_types_by_name
            or top in module.DESCRIPTOR.enum_types_by_name
        ):
            return f"{package}.{ours}"
    raise AssertionError(f"{full_name} is not one of ours")


def _our_messages() -> list[Descriptor]:
    out: list[Descriptor] = []

    def walk(d: Descriptor) -> None:
        if d.GetOptions().map_entry:
            return
        out.append(d)
        for nested in d.nested_types:
            walk(nested)

    for module in OURS:
        for d in module.DESCRIPTOR.message_types_by_name.values():
            walk(d)
    return out


def _our_enums():
    for module in OURS:
        yield from module.DESCRIPTOR.enum_types_by_name.values()
    for d in _our_messages():
        yield from d.enum_types


def _type_name(field: FieldDescriptor) -> str | None:
    if field.message_type is not None:
        name = field.message_type.full_name
        return name if name.startswith("google.protobuf.") else _upstream_name(name)
    if field.enum_type is not None:
        return _upstream_name(field.enum_type.full_name)
    return None


MESSAGES = _our_messages()


@pytest.mark.parametrize("ours", MESSAGES, ids=lambda d: d.full_name)
def test_fields_match_upstream(ours: Descriptor, upstream_pool) -> None:
    name = _upstream_name(ours.full_name)
    theirs = upstream_pool.FindMessageTypeByName(name)
    for field in ours.fields:
        assert field.name in theirs.fields_by_name, f"{name}.{field.name} is not upstream"
        up = theirs.fields_by_name[field.name]
        where = f"{name}.{field.name}"
        assert field.number == up.number, where
        assert field.is_repeated == up.is_repeated, where
        oneofs = (field.containing_oneof, up.containing_oneof)
        assert [o.name if o else None for o in oneofs] == [
            o.name if o else None for o in oneofs[::-1]
        ], where
        if where in ENUM_AS_INT:
            assert up.type == FieldDescriptor.TYPE_ENUM and field.type == FieldDescriptor.TYPE_INT32
            continue
        assert field.type == up.type, where
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for part in ("key", "value"):
                a = field.message_type.fields_by_name[part]
                b = up.message_type.fields_by_name[part]
                assert (a.type, _type_name(a)) == (b.type, _upstream_name_or_wkt(b)), where
        else:
            assert _type_name(field) == _upstream_name_or_wkt(up), where
    missing = set(theirs.fields_by_name) - set(ours.fields_by_name)
    assert missing == OMITTED.get(name, set()), f"{name}: upstream fields we lack: {missing}"


def _upstream_name_or_wkt(field: FieldDescriptor) -> str | None:
    t = field.message_type or field.enum_type
    return None if t is None else t.full_name


@pytest.mark.parametrize("ours", list(_our_enums()), ids=lambda e: e.full_name)
def test_enums_match_upstream(ours, upstream_pool) -> None:
    theirs = upstream_pool.FindEnumTypeByName(_upstream_name(ours.full_name))
    assert {(v.name, v.number) for v in ours.values} == {(v.name, v.number) for v in theirs.values}


def _fill(message, depth: int = 0, choice: int = 0) -> None:
    """Give every field a non-default value; `choice` picks the branch of each oneof."""
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        real_oneof = oneof is not None and not oneof.name.startswith("_")
        if real_oneof and oneof.fields[choice % len(oneof.fields)] is not field:
            continue
        _set(message, field, depth, choice)


def _scalar(field: FieldDescriptor, i: int):
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{i}"
    if t == FieldDescriptor.TYPE_BYTES:
        return f"{field.name}\x00{i}".encode()
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return 1.5 + i
    if t == FieldDescriptor.TYPE_ENUM:
        values = field.enum_type.values
        return values[min(1 + i, len(values) - 1)].number
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        return -(field.number + i) if i else field.number + 300
    return field.number + i + 1


def _set(message, field: FieldDescriptor, depth: int, choice: int) -> None:
    value = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        vfield = field.message_type.fields_by_name["value"]
        kfield = field.message_type.fields_by_name["key"]
        for i in range(2):
            key = _scalar(kfield, i)
            if vfield.message_type is not None:
                if depth < 3:
                    _fill(value[key], depth + 1, choice)
            else:
                value[key] = _scalar(vfield, i)
        return
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Any":
            items = [value.add() for _ in range(2)] if field.is_repeated else [value]
            for item in items:
                item.type_url = "type.googleapis.com/x.Y"
                item.value = b"\x08\x01"
            return
        if depth >= 3:
            return
        if field.is_repeated:
            for _ in range(2):
                _fill(value.add(), depth + 1, choice)
        else:
            _fill(value, depth + 1, choice)
            value.SetInParent()
        return
    if field.is_repeated:
        value.extend(_scalar(field, i) for i in range(3))
    else:
        setattr(message, field.name, _scalar(field, 0))


WITH_FIELDS = [d for d in MESSAGES if d.fields]


@pytest.mark.parametrize("ours", WITH_FIELDS, ids=lambda d: d.full_name)
def test_same_bytes_both_ways(ours: Descriptor, upstream_pool) -> None:
    from google.protobuf import message_factory

    our_cls = message_factory.GetMessageClass(ours)
    their_cls = message_factory.GetMessageClass(
        upstream_pool.FindMessageTypeByName(_upstream_name(ours.full_name))
    )
    for choice in range(3):
        mine = our_cls()
        _fill(mine, choice=choice)
        data = mine.SerializeToString(deterministic=True)
        assert data, ours.full_name
        theirs = their_cls.FromString(data)
        assert theirs.SerializeToString(deterministic=True) == data
        assert len(unknown_fields.UnknownFieldSet(theirs)) == 0
        back = our_cls.FromString(theirs.SerializeToString(deterministic=True))
        assert back == mine


def test_upstream_only_fields_survive_a_round_trip(upstream_pool) -> None:
    from tensorflow_serving.apis import predict_pb2

    up = predict_pb2.PredictRequest(client_id=b"abc")
    up.model_spec.name = "m"
    up.request_options.max_cache_length = 7
    data = up.SerializeToString(deterministic=True)
    mine = apis_pb2.PredictRequest.FromString(data)
    assert mine.model_spec.name == "m"
    assert mine.SerializeToString(deterministic=True) == data


def test_every_method_path_exists_upstream(upstream_pool) -> None:
    for method in _methods.METHODS:
        service = upstream_pool.FindServiceByName(method.service)
        up = service.methods_by_name[method.name]
        assert _upstream_name(method.request.DESCRIPTOR.full_name) == up.input_type.full_name
        assert _upstream_name(method.response.DESCRIPTOR.full_name) == up.output_type.full_name
    assert {(m.service, m.name) for m in _methods.METHODS} == {
        (s, m.name)
        for s in (_methods.PREDICTION_SERVICE, _methods.MODEL_SERVICE)
        for m in upstream_pool.FindServiceByName(s).methods
    }


def test_signature_def_map_any_uses_the_upstream_type_url(upstream_pool) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2

    ours = apis_pb2.SignatureDefMap()
    sig = ours.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["x"].name = "x:0"
    sig.inputs["x"].dtype = tensor_pb2.DT_FLOAT
    response = apis_pb2.GetModelMetadataResponse()
    response.metadata["signature_def"].CopyFrom(
        any_pb2.Any(type_url=_methods.SIGNATURE_DEF_MAP_TYPE_URL, value=ours.SerializeToString())
    )
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        response.SerializeToString()
    )
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert theirs.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].inputs["x"].name == "x:0"


def test_three_fills_cover_every_oneof_branch() -> None:
    widest = max(len(o.fields) for d in MESSAGES for o in d.oneofs)
    assert widest <= 3, "raise the range in test_same_bytes_both_ways"
