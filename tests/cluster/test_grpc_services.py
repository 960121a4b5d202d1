"""Any gRPC tool can talk to a node: standard health checking and server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_health_and_reflection_list_every_service(make_cluster) -> None:
    cluster = make_cluster(1)
    with grpc.insecure_channel(cluster.address(1)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {service.name for service in response.list_services_response.service}
        assert {"millpond.v1.Admin", "millpond.v1.Broker", "millpond.v1.RaftTransport",
                "millpond.v1.ControllerService", "millpond.v1.ConsumerGroups",
                "grpc.health.v1.Health"} <= names

        by_symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="millpond.v1.Broker")
        [response] = list(reflection.ServerReflectionInfo(iter([by_symbol]), timeout=10))
        assert response.file_descriptor_response.file_descriptor_proto  # grpcurl can describe it
