// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title The EEA worker registry (proxy model)
/// @notice Workers as a service's connector publishes them. The functions and their ABI are the
/// ones Avalon's Ethereum clients call (wire spec §8). Only registrars (the deployer, and the
/// accounts it names) register workers, so nobody can take a service's worker id first; a worker
/// is changed only by the account that registered it (or that it was handed to), and
/// `workerOwner` lets the work-order registry check that. Look-ups read an index per filter, so
/// a page costs the same however many workers there are.
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

    address public immutable deployer;
    /// Accounts that may register workers.
    mapping(address => bool) public registrars;
    mapping(bytes32 => Worker) private workers;
    /// Worker ids per look-up filter (`filterKey`), in registration order; 0 in a filter is "any".
    mapping(bytes32 => bytes32[]) private index;

    event workerRegistered(bytes32 indexed workerID, uint256 workerType, bytes32 organizationId, address owner);
    event workerUpdated(bytes32 indexed workerID, string details);
    event workerStatusSet(bytes32 indexed workerID, uint256 status);
    event workerTransferred(bytes32 indexed workerID, address owner);
    event registrarSet(address indexed registrar, bool allowed);

    constructor() {
        deployer = msg.sender;
        registrars[msg.sender] = true;
    }

    /// @notice Lets `registrar` register workers, or no longer; the deployer only.
    function setRegistrar(address registrar, bool allowed) public {
        require(msg.sender == deployer, "only the deployer names registrars");
        registrars[registrar] = allowed;
        emit registrarSet(registrar, allowed);
    }

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
        require(registrars[msg.sender], "only a registrar registers workers");
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
        for (uint256 i = 0; i < appTypeIds.length; ++i) {
            require(appTypeIds[i] != bytes32(0), "empty application type id");
            for (uint256 j = 0; j < i; ++j) {
                require(appTypeIds[j] != appTypeIds[i], "an application type id twice");
            }
        }
        indexUnder(workerID, workerType, organizationId, bytes32(0));
        for (uint256 i = 0; i < appTypeIds.length; ++i) {
            indexUnder(workerID, workerType, organizationId, appTypeIds[i]);
        }
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

    /// @notice The page of matching ids that starts at `lookUpTag` (a position in the filter's
    /// index); the answer's tag is where the next page starts, 0 when none is left.
    function workerLookUpNext(uint256 workerType, bytes32 organizationId, bytes32 appTypeId, uint256 lookUpTag)
        public
        view
        returns (uint256 totalCount, uint256 newLookupTag, bytes32[] memory ids_)
    {
        bytes32[] storage matches = index[filterKey(workerType, organizationId, appTypeId)];
        totalCount = matches.length;
        uint256 start = lookUpTag < totalCount ? lookUpTag : totalCount;
        uint256 end = totalCount - start > PAGE ? start + PAGE : totalCount;
        ids_ = new bytes32[](end - start);
        for (uint256 i = start; i < end; ++i) {
            ids_[i - start] = matches[i];
        }
        newLookupTag = end < totalCount ? end : 0;
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

    /// @notice Hands a worker to another account (a new connector key); its registrant only.
    function workerTransfer(bytes32 workerID, address owner) public onlyOwner(workerID) {
        require(owner != address(0), "no owner");
        workers[workerID].owner = owner;
        emit workerTransferred(workerID, owner);
    }

    function filterKey(uint256 workerType, bytes32 organizationId, bytes32 appTypeId) private pure returns (bytes32) {
        return keccak256(abi.encode(workerType, organizationId, appTypeId));
    }

    /// Lists the worker under every filter it matches with this application type: each of type,
    /// organization and the application type given or "any".
    function indexUnder(bytes32 workerID, uint256 workerType, bytes32 organizationId, bytes32 appTypeId) private {
        index[filterKey(workerType, organizationId, appTypeId)].push(workerID);
        index[filterKey(0, organizationId, appTypeId)].push(workerID);
        if (organizationId != bytes32(0)) {
            index[filterKey(workerType, bytes32(0), appTypeId)].push(workerID);
            index[filterKey(0, bytes32(0), appTypeId)].push(workerID);
        }
    }
}
