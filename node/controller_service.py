"""The ControllerService gRPC service: node registration and heartbeats, on the active controller."""

from __future__ import annotations

from typing import Protocol

import grpc

from millpond import errors
from millpond.controller import ActiveController, LeaderReport
from millpond.v1 import internal_pb2 as pb
from millpond.v1 import internal_pb2_grpc as pb_grpc


class ControllerView(Protocol):
    """What the service needs from its node."""

    @property
    def controller(self) -> ActiveController | None: ...

    def controller_id(self) -> int: ...

    def address_of(self, node_id: int) -> str: ...


class ControllerService(pb_grpc.ControllerServiceServicer):
    """Answers only on the active controller; elsewhere ``NOT_CONTROLLER`` with its address."""

    def __init__(self, view: ControllerView) -> None:
        self._view = view

    def _controller(self) -> ActiveController:
        controller = self._view.controller
        if controller is None:
            leader = self._view.controller_id()
            raise errors.NotController("this node is not the active controller", leader,
                                       self._view.address_of(leader) if leader else "")
        return controller

    async def RegisterNode(self, request: pb.RegisterNodeRequest,
                           context: grpc.aio.ServicerContext) -> pb.RegisterNodeResponse:
        epoch = await self._controller().register_node(request.node_id, request.address,
                                                       request.incarnation)
        return pb.RegisterNodeResponse(epoch=epoch)

    async def NodeHeartbeat(self, request: pb.NodeHeartbeatRequest,
                            context: grpc.aio.ServicerContext) -> pb.NodeHeartbeatResponse:
        reports = [
            LeaderReport(group=r.group, term=r.term, voters=tuple(r.voters), learners=tuple(r.learners),
                         in_sync=tuple(r.in_sync), log_start_offset=r.log_start_offset,
                         high_watermark=r.high_watermark)
            for r in request.leading
        ]
        result = await self._controller().heartbeat(request.node_id, request.epoch,
                                                    request.metadata_applied, reports)
        actions = []
        for action in result.actions:
            proto = pb.LeaderAction(group=action.group)
            setattr(proto, action.kind.value, action.node)
            actions.append(proto)
        return pb.NodeHeartbeatResponse(alive=result.alive, actions=actions)
