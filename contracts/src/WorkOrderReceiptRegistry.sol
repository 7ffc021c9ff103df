// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import "./WorkOrderRegistry.sol";

/// @title The EEA work-order receipts (proxy model)
/// @notice A receipt per work order and its updates, with the ABI of Avalon's receipt registry
/// (wire spec §8). Only the account that submitted the order creates its receipt; it and the
/// account that registered the order's worker (whose connector posts the worker's signed update)
/// update it. The chain stores what it is given: a reader checks each update's signature (EEA §7),
/// as with receipts the service keeps.
contract WorkOrderReceiptRegistry {
    /// `updateIndex` that names an updater's last update.
    uint256 public constant LASTUPDATE = 0xFFFFFFFF;
    /// `receiptStatus` that matches any status in a look-up.
    uint256 public constant ANY_STATUS = 255;
    /// The most ids one look-up answer carries.
    uint256 public constant PAGE = 100;

    struct Receipt {
        bool exists;
        bytes32 workerServiceId;
        bytes32 workerId;
        bytes32 requesterId;
        uint256 receiptCreateStatus;
        bytes workOrderRequestHash;
        uint256 currentReceiptStatus;
    }

    struct Update {
        bytes32 updaterId;
        uint256 updateType;
        bytes updateData;
        bytes updateSignature;
        string signatureRules;
    }

    WorkOrderRegistry public immutable workOrderRegistry;
    mapping(bytes32 => Receipt) private receipts;
    /// work order id => updater id => its updates, oldest first.
    mapping(bytes32 => mapping(bytes32 => Update[])) private updates;
    /// Every work order id with a receipt, in creation order (look-ups walk it).
    bytes32[] private ids;

    event workOrderReceiptCreated(
        bytes32 indexed workOrderId,
        bytes32 indexed workerServiceId,
        bytes32 indexed requesterId,
        bytes32 workerId,
        uint256 receiptStatus,
        bytes workOrderRequestHash,
        uint256 errorCode
    );

    event workOrderReceiptUpdated(
        bytes32 indexed workOrderId,
        bytes32 indexed updaterId,
        uint256 indexed updateType,
        bytes updateData,
        bytes updateSignature,
        string signatureRules,
        uint256 errorCode
    );

    constructor(WorkOrderRegistry orders) {
        workOrderRegistry = orders;
    }

    function workOrderReceiptCreate(
        bytes32 workOrderId,
        bytes32 workerId,
        bytes32 workerServiceId,
        bytes32 requesterId,
        uint256 receiptCreateStatus,
        bytes memory workOrderRequestHash
    ) public returns (uint256 errorCode) {
        require(workOrderId != bytes32(0), "empty work order id");
        require(!receipts[workOrderId].exists, "the work order has a receipt already");
        require(receiptCreateStatus < ANY_STATUS, "status out of range");
        require(
            workOrderRegistry.workOrderSubmitter(workOrderId) == msg.sender,
            "only the account that submitted the work order may create its receipt"
        );
        receipts[workOrderId] = Receipt(
            true, workerServiceId, workerId, requesterId, receiptCreateStatus, workOrderRequestHash, receiptCreateStatus
        );
        ids.push(workOrderId);
        emit workOrderReceiptCreated(
            workOrderId, workerServiceId, requesterId, workerId, receiptCreateStatus, workOrderRequestHash, 0
        );
        return 0;
    }

    function workOrderReceiptUpdate(
        bytes32 workOrderId,
        bytes32 updaterId,
        uint256 updateType,
        bytes memory updateData,
        bytes memory updateSignature,
        string memory signatureRules
    ) public returns (uint256 errorCode) {
        Receipt storage receipt = receipts[workOrderId];
        require(receipt.exists, "no receipt for the work order");
        (, address workerOwner) = workOrderRegistry.workOrderWorker(workOrderId);
        require(
            msg.sender == workerOwner || msg.sender == workOrderRegistry.workOrderSubmitter(workOrderId),
            "only the work order's submitter or its worker's registrant may update its receipt"
        );
        if (updateType < ANY_STATUS) {
            receipt.currentReceiptStatus = updateType;
        }
        updates[workOrderId][updaterId].push(Update(updaterId, updateType, updateData, updateSignature, signatureRules));
        emit workOrderReceiptUpdated(workOrderId, updaterId, updateType, updateData, updateSignature, signatureRules, 0);
        return 0;
    }

    function workOrderReceiptRetrieve(bytes32 workOrderId)
        public
        view
        returns (
            bytes32 workerServiceId,
            bytes32 workerId,
            bytes32 requesterId,
            uint256 receiptCreateStatus,
            bytes memory workOrderRequestHash,
            uint256 currentReceiptStatus
        )
    {
        Receipt storage receipt = receipts[workOrderId];
        return (
            receipt.workerServiceId,
            receipt.workerId,
            receipt.requesterId,
            receipt.receiptCreateStatus,
            receipt.workOrderRequestHash,
            receipt.currentReceiptStatus
        );
    }

    /// @notice The updater's update at `updateIndex` (LASTUPDATE: its last), and how many it made.
    function workOrderReceiptUpdateRetrieve(bytes32 workOrderId, bytes32 updaterId_, uint256 updateIndex)
        public
        view
        returns (
            bytes32 updaterId,
            uint256 updateType,
            bytes memory updateData,
            bytes memory updateSignature,
            string memory signatureRules,
            uint256 updateCount
        )
    {
        Update[] storage list = updates[workOrderId][updaterId_];
        require(list.length > 0, "no such update");
        uint256 index = updateIndex == LASTUPDATE ? list.length - 1 : updateIndex;
        require(index < list.length, "no such update");
        Update storage update = list[index];
        return (
            update.updaterId,
            update.updateType,
            update.updateData,
            update.updateSignature,
            update.signatureRules,
            list.length
        );
    }

    function workOrderReceiptLookUp(bytes32 workerServiceId, bytes32 workerId, bytes32 requesterId, uint256 receiptStatus)
        public
        view
        returns (uint256 totalCount, uint256 lookUpTag, bytes32[] memory ids_)
    {
        return workOrderReceiptLookUpNext(workerServiceId, workerId, requesterId, receiptStatus, 0);
    }

    /// @notice The page of matching ids (zero ids and ANY_STATUS match anything) from `lastLookUpTag`,
    /// an index into the creation order; the answer's tag is where the next page starts, 0 if none.
    function workOrderReceiptLookUpNext(
        bytes32 workerServiceId,
        bytes32 workerId,
        bytes32 requesterId,
        uint256 receiptStatus,
        uint256 lastLookUpTag
    ) public view returns (uint256 totalCount, uint256 lookUpTag, bytes32[] memory ids_) {
        bytes32[] memory page = new bytes32[](PAGE);
        uint256 found = 0;
        for (uint256 i = 0; i < ids.length; ++i) {
            Receipt storage receipt = receipts[ids[i]];
            if (workerServiceId != bytes32(0) && receipt.workerServiceId != workerServiceId) continue;
            if (workerId != bytes32(0) && receipt.workerId != workerId) continue;
            if (requesterId != bytes32(0) && receipt.requesterId != requesterId) continue;
            if (receiptStatus != ANY_STATUS && receipt.currentReceiptStatus != receiptStatus) continue;
            if (i >= lastLookUpTag) {
                if (found < PAGE) {
                    page[found++] = ids[i];
                } else if (lookUpTag == 0) {
                    lookUpTag = i;
                }
            }
            ++totalCount;
        }
        ids_ = new bytes32[](found);
        for (uint256 i = 0; i < found; ++i) {
            ids_[i] = page[i];
        }
    }
}
