// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import "./WorkOrderRegistry.sol";

/// @title The EEA work-order receipts (proxy model)
/// @notice A receipt per work order and its updates, with the ABI of Avalon's receipt registry
/// (wire spec §8). Only the account that submitted the order creates its receipt, for the order's
/// own worker and requester; updates come from that account (as the requester) and from the
/// account that registered the order's worker (as the worker, whose signed update its connector
/// posts). The chain stores what it is given: a reader checks each update's signature (EEA §7),
/// as with receipts the service keeps. Look-ups read an index per filter and scan a bounded
/// stretch of it per page.
contract WorkOrderReceiptRegistry {
    /// `updateIndex` that names an updater's last update.
    uint256 public constant LASTUPDATE = 0xFFFFFFFF;
    /// `receiptStatus` that matches any status in a look-up.
    uint256 public constant ANY_STATUS = 255;
    /// The most ids one look-up answer carries.
    uint256 public constant PAGE = 100;
    /// The most index entries one look-up page looks at (the status filter skips some).
    uint256 public constant SCAN = 400;

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
    /// Work order ids per (worker service, worker, requester) filter, 0 for "any", in creation
    /// order.
    mapping(bytes32 => bytes32[]) private index;

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
        (address submitter, bytes32 orderWorker, bytes32 orderRequester,) = workOrderRegistry.workOrderParties(workOrderId);
        require(submitter == msg.sender, "only the account that submitted the work order may create its receipt");
        require(workerId == orderWorker && requesterId == orderRequester, "not the work order's worker and requester");
        receipts[workOrderId] = Receipt(
            true, workerServiceId, workerId, requesterId, receiptCreateStatus, workOrderRequestHash, receiptCreateStatus
        );
        for (uint256 i = 0; i < 8; ++i) {
            // A combination that names a zero id is the one that leaves it out: listed once.
            bool zero = (i & 1 != 0 && workerServiceId == bytes32(0)) || (i & 2 != 0 && workerId == bytes32(0))
                || (i & 4 != 0 && requesterId == bytes32(0));
            if (zero) continue;
            index[
                filterKey(
                    i & 1 == 0 ? bytes32(0) : workerServiceId,
                    i & 2 == 0 ? bytes32(0) : workerId,
                    i & 4 == 0 ? bytes32(0) : requesterId
                )
            ].push(workOrderId);
        }
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
        (address submitter, bytes32 orderWorker, bytes32 orderRequester, address workerOwner) =
            workOrderRegistry.workOrderParties(workOrderId);
        if (msg.sender == workerOwner) {
            require(updaterId == orderWorker, "the worker's registrant updates as the worker");
        } else {
            require(msg.sender == submitter, "only the work order's submitter or its worker's registrant may update its receipt");
            require(
                updaterId == orderRequester && updaterId != orderWorker, "the submitter updates as the requester"
            );
        }
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
        uint256 position = updateIndex == LASTUPDATE ? list.length - 1 : updateIndex;
        require(position < list.length, "no such update");
        Update storage update = list[position];
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

    /// @notice A page of matching ids (zero ids and ANY_STATUS match anything), looking at most
    /// SCAN index entries from `lastLookUpTag`, a position in the filter's index; the answer's tag
    /// is where the next page starts (0: none left). `totalCount` counts the entries under the id
    /// filter, whatever their status.
    function workOrderReceiptLookUpNext(
        bytes32 workerServiceId,
        bytes32 workerId,
        bytes32 requesterId,
        uint256 receiptStatus,
        uint256 lastLookUpTag
    ) public view returns (uint256 totalCount, uint256 lookUpTag, bytes32[] memory ids_) {
        bytes32[] storage entries = index[filterKey(workerServiceId, workerId, requesterId)];
        totalCount = entries.length;
        bytes32[] memory page = new bytes32[](PAGE);
        uint256 found = 0;
        uint256 i = lastLookUpTag < totalCount ? lastLookUpTag : totalCount;
        uint256 end = totalCount - i > SCAN ? i + SCAN : totalCount;
        for (; i < end && found < PAGE; ++i) {
            if (receiptStatus == ANY_STATUS || receipts[entries[i]].currentReceiptStatus == receiptStatus) {
                page[found++] = entries[i];
            }
        }
        lookUpTag = i < totalCount ? i : 0;
        ids_ = new bytes32[](found);
        for (uint256 k = 0; k < found; ++k) {
            ids_[k] = page[k];
        }
    }

    function filterKey(bytes32 workerServiceId, bytes32 workerId, bytes32 requesterId) private pure returns (bytes32) {
        return keccak256(abi.encode(workerServiceId, workerId, requesterId));
    }
}
