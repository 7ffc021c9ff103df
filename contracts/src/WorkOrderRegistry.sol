// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import "./WorkerRegistry.sol";

/// @title The EEA work-order queue (proxy model)
/// @notice Requesters submit work orders here; the connector of the service that hosts the worker
/// runs them and completes them with the worker's signed response. The functions and events have
/// the ABI Avalon's Ethereum clients use (wire spec §8, VERSION 1.1.0.0). Unlike Avalon's, an id
/// is used once (a second submission reverts), an order is completed once, and only by the
/// account that registered its worker.
contract WorkOrderRegistry {
    bytes4 public constant VERSION = 0x01010000;

    uint256 public constant STATUS_NULL = 0;
    uint256 public constant STATUS_ACTIVE = 1;
    uint256 public constant STATUS_COMPLETED = 2;

    struct WorkOrder {
        uint256 status;
        bytes32 workerID;
        bytes32 requesterID;
        address submitter;
        string request;
        string response;
    }

    WorkerRegistry public immutable workerRegistry;
    mapping(bytes32 => WorkOrder) private orders;

    event workOrderSubmitted(
        bytes32 indexed workOrderId,
        bytes32 indexed workerId,
        bytes32 indexed requesterId,
        string workOrderRequest,
        uint256 errorCode,
        address senderAddress,
        bytes4 version
    );

    event workOrderCompleted(
        bytes32 requesterId,
        bytes32 workOrderId,
        uint256 workOrderStatus,
        string workOrderResponse,
        uint256 errorCode,
        bytes4 version
    );

    constructor(WorkerRegistry workers) {
        workerRegistry = workers;
    }

    /// @notice Queues a work order for an active worker; `workOrderRequest` is the params JSON
    /// of a `WorkOrderSubmit`. Returns 0 (a used id reverts).
    function workOrderSubmit(bytes32 workOrderID, bytes32 workerID, bytes32 requesterID, string memory workOrderRequest)
        public
        returns (uint256 errorCode)
    {
        require(workOrderID != bytes32(0), "empty work order id");
        require(orders[workOrderID].status == STATUS_NULL, "work order id already used");
        (uint256 workerStatus,,,,) = workerRegistry.workerRetrieve(workerID);
        require(workerStatus == workerRegistry.STATUS_ACTIVE(), "worker is not active");
        WorkOrder storage order = orders[workOrderID];
        order.status = STATUS_ACTIVE;
        order.workerID = workerID;
        order.requesterID = requesterID;
        order.submitter = msg.sender;
        order.request = workOrderRequest;
        emit workOrderSubmitted(workOrderID, workerID, requesterID, workOrderRequest, 0, msg.sender, VERSION);
        return 0;
    }

    /// @notice Completes an active order with the service's JSON-RPC response; only the account
    /// that registered the order's worker may. Returns 0 (anything else reverts).
    function workOrderComplete(bytes32 workOrderID, string memory workOrderResponse) public returns (uint256 errorCode) {
        WorkOrder storage order = orders[workOrderID];
        require(order.status == STATUS_ACTIVE, "work order is not active");
        require(
            workerRegistry.workerOwner(order.workerID) == msg.sender,
            "only the account that registered the worker may complete its orders"
        );
        order.status = STATUS_COMPLETED;
        order.response = workOrderResponse;
        emit workOrderCompleted(order.requesterID, workOrderID, STATUS_COMPLETED, workOrderResponse, 0, VERSION);
        return 0;
    }

    /// @notice Who an order concerns: the account that submitted it, its worker and requester,
    /// and the account that registered the worker (zeros for an unknown id).
    function workOrderParties(bytes32 workOrderID)
        public
        view
        returns (address submitter, bytes32 workerID, bytes32 requesterID, address workerOwner)
    {
        WorkOrder storage order = orders[workOrderID];
        return (order.submitter, order.workerID, order.requesterID, workerRegistry.workerOwner(order.workerID));
    }

    /// @notice An order's state; an unknown id answers status 0 and empty strings.
    function workOrderGet(bytes32 workOrderID)
        public
        view
        returns (uint256 status, bytes32 workerID, string memory request, string memory response, uint256 errorCode)
    {
        WorkOrder storage order = orders[workOrderID];
        return (order.status, order.workerID, order.request, order.response, 0);
    }
}
