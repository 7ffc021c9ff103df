// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title The EEA worker registry (proxy model)
/// @notice Workers as a service's connector publishes them. The functions and their ABI are the
/// ones Avalon's Ethereum clients call (wire spec §8); a worker can be changed only by the
/// account that registered it, and `workerOwner` lets the work-order registry check that.
contract WorkerRegistry {
    uint256 public constant STATUS_NULL = 0;
    uint256 public constant STATUS_ACTIVE = 1;
    uint256 public constant STATUS_OFFLINE = 2;
    uint256 public constant STATUS_DECOMMISSIONED = 3;
    uint256 public constant STATUS_COMPROMISED = 4;

    /// The most ids one look-up answer carries; `lookupTag` then names where the next page starts.
    uint256 public constant PAGE = 100;

    struct Worker {
        uint256 status;
        uint256 workerType;
        bytes32 organizationId;
        bytes32[] appTypeIds;
        string details;
        address owner;
    }

    mapping(bytes32 => Worker) private workers;
    /// Every registered id, in registration order (look-ups walk it).
    bytes32[] private ids;

    event workerRegistered(bytes32 indexed workerID, uint256 workerType, bytes32 organizationId, address owner);
    event workerUpdated(bytes32 indexed workerID, string details);
    event workerStatusSet(bytes32 indexed workerID, uint256 status);

    modifier onlyOwner(bytes32 workerID) {
        require(workers[workerID].status != STATUS_NULL, "unknown worker");
        require(workers[workerID].owner == msg.sender, "only the account that registered the worker may change it");
        _;
    }

    function workerRegister(
        bytes32 workerID,
        uint256 workerType,
        bytes32 organizationId,
        bytes32[] memory appTypeIds,
        string memory details
    ) public {
        require(workerID != bytes32(0), "empty worker id");
        require(workers[workerID].status == STATUS_NULL, "worker already registered");
        require(workerType != 0, "worker type 0");
        Worker storage worker = workers[workerID];
        worker.status = STATUS_ACTIVE;
        worker.workerType = workerType;
        worker.organizationId = organizationId;
        worker.appTypeIds = appTypeIds;
        worker.details = details;
        worker.owner = msg.sender;
        ids.push(workerID);
        emit workerRegistered(workerID, workerType, organizationId, msg.sender);
    }

    function workerUpdate(bytes32 workerID, string memory details) public onlyOwner(workerID) {
        workers[workerID].details = details;
        emit workerUpdated(workerID, details);
    }

    function workerSetStatus(bytes32 workerID, uint256 status) public onlyOwner(workerID) {
        require(status >= STATUS_ACTIVE && status <= STATUS_COMPROMISED, "status out of range");
        workers[workerID].status = status;
        emit workerStatusSet(workerID, status);
    }

    /// @notice Ids of workers matching the filter (0 matches any), the first page.
    function workerLookUp(uint256 workerType, bytes32 organizationId, bytes32 appTypeId)
        public
        view
        returns (uint256 totalCount, uint256 lookupTag, bytes32[] memory ids_)
    {
        return workerLookUpNext(workerType, organizationId, appTypeId, 0);
    }

    /// @notice The page of matching ids that starts at `lookUpTag` (an index into the
    /// registration order); the answer's tag is where the next page starts, 0 when none is left.
    function workerLookUpNext(uint256 workerType, bytes32 organizationId, bytes32 appTypeId, uint256 lookUpTag)
        public
        view
        returns (uint256 totalCount, uint256 newLookupTag, bytes32[] memory ids_)
    {
        bytes32[] memory page = new bytes32[](PAGE);
        uint256 found = 0;
        for (uint256 i = 0; i < ids.length; ++i) {
            if (!matches(workers[ids[i]], workerType, organizationId, appTypeId)) {
                continue;
            }
            if (i >= lookUpTag) {
                if (found < PAGE) {
                    page[found++] = ids[i];
                } else if (newLookupTag == 0) {
                    newLookupTag = i;
                }
            }
            ++totalCount;
        }
        ids_ = new bytes32[](found);
        for (uint256 i = 0; i < found; ++i) {
            ids_[i] = page[i];
        }
    }

    function workerRetrieve(bytes32 workerID)
        public
        view
        returns (
            uint256 status,
            uint256 workerType,
            bytes32 organizationId,
            bytes32[] memory appTypeIds,
            string memory details
        )
    {
        Worker storage worker = workers[workerID];
        return (worker.status, worker.workerType, worker.organizationId, worker.appTypeIds, worker.details);
    }

    /// @notice The account that registered the worker (zero for an unknown worker).
    function workerOwner(bytes32 workerID) public view returns (address) {
        return workers[workerID].owner;
    }

    function matches(Worker storage worker, uint256 workerType, bytes32 organizationId, bytes32 appTypeId)
        private
        view
        returns (bool)
    {
        if (workerType != 0 && worker.workerType != workerType) return false;
        if (organizationId != bytes32(0) && worker.organizationId != organizationId) return false;
        if (appTypeId == bytes32(0)) return true;
        for (uint256 i = 0; i < worker.appTypeIds.length; ++i) {
            if (worker.appTypeIds[i] == appTypeId) return true;
        }
        return false;
    }
}
