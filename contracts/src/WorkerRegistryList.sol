// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title The registry of worker registries (EEA "registry list")
/// @notice Organizations and where their worker registries are: a URI and the registry
/// contract's address. The ABI is that of Avalon's `DirectRegistry` (wire spec §8), whose status
/// is an enum (uint8 in the ABI). Only the account that deployed it changes it (Avalon let
/// anyone update an entry or its status).
contract DirectRegistry {
    enum RegistryStatus {
        Unknown,
        Active,
        OffLine,
        Decommissioned
    }

    struct RegistryInfo {
        bytes32 orgId;
        string uri;
        bytes32 scAddr;
        bytes32[] appTypeIds;
        RegistryStatus status;
    }

    event RegistryAddEvent(bytes32 orgId, string uri, bytes32 scAddr, bytes32[] appTypeIds, RegistryStatus status);
    event RegistryUpdateEvent(bytes32 orgId, string uri, bytes32 scAddr, bytes32[] appTypeIds);
    event RegistrySetStatusEvent(bytes32 orgId, RegistryStatus status);

    address private immutable owner;
    mapping(bytes32 => RegistryInfo) private registries;
    bytes32[] private orgIds;

    modifier onlyOwner() {
        require(msg.sender == owner, "only the account that deployed the registry list may change it");
        _;
    }

    constructor() {
        owner = msg.sender;
    }

    function registryAdd(bytes32 orgId, string memory uri, bytes32 scAddr, bytes32[] memory appTypeIds)
        public
        onlyOwner
    {
        require(orgId != bytes32(0), "empty org id");
        require(bytes(uri).length != 0, "empty uri");
        require(registries[orgId].orgId == bytes32(0), "the organization has a registry already");
        registries[orgId] = RegistryInfo(orgId, uri, scAddr, appTypeIds, RegistryStatus.Active);
        orgIds.push(orgId);
        emit RegistryAddEvent(orgId, uri, scAddr, appTypeIds, RegistryStatus.Active);
    }

    /// @notice Changes the URI and address, and adds the application types not listed yet.
    function registryUpdate(bytes32 orgId, string memory uri, bytes32 scAddr, bytes32[] memory appTypeIds)
        public
        onlyOwner
    {
        require(bytes(uri).length != 0, "empty uri");
        RegistryInfo storage registry = registries[orgId];
        require(registry.orgId == orgId && orgId != bytes32(0), "unknown organization");
        registry.uri = uri;
        registry.scAddr = scAddr;
        for (uint256 i = 0; i < appTypeIds.length; ++i) {
            if (!listed(registry.appTypeIds, appTypeIds[i])) {
                registry.appTypeIds.push(appTypeIds[i]);
            }
        }
        emit RegistryUpdateEvent(orgId, uri, scAddr, appTypeIds);
    }

    function registrySetStatus(bytes32 orgId, RegistryStatus status) public onlyOwner {
        require(registries[orgId].orgId == orgId && orgId != bytes32(0), "unknown organization");
        require(status != RegistryStatus.Unknown, "status out of range");
        registries[orgId].status = status;
        emit RegistrySetStatusEvent(orgId, status);
    }

    /// @notice Organizations with a registry for `appTypeId` (zero: any); one page, no tag.
    function registryLookUp(bytes32 appTypeId)
        public
        view
        returns (uint256 totalCount, string memory lookUpTag, bytes32[] memory ids)
    {
        bytes32[] memory all = new bytes32[](orgIds.length);
        for (uint256 i = 0; i < orgIds.length; ++i) {
            if (appTypeId == bytes32(0) || listed(registries[orgIds[i]].appTypeIds, appTypeId)) {
                all[totalCount++] = orgIds[i];
            }
        }
        ids = new bytes32[](totalCount);
        for (uint256 i = 0; i < totalCount; ++i) {
            ids[i] = all[i];
        }
        lookUpTag = "";
    }

    /// @notice Every match fits in `registryLookUp`'s answer, so there is never a next page.
    function registryLookUpNext(bytes32 appTypeId, string memory lookUpTag)
        public
        pure
        returns (int256 totalCount, string memory newLookupTag, bytes32[] memory registryIds)
    {
        (appTypeId, lookUpTag);
        return (0, "", new bytes32[](0));
    }

    function registryRetrieve(bytes32 orgId)
        public
        view
        returns (string memory uri, bytes32 scAddr, bytes32[] memory appTypeIds, RegistryStatus status)
    {
        RegistryInfo storage registry = registries[orgId];
        require(registry.orgId == orgId && orgId != bytes32(0), "unknown organization");
        return (registry.uri, registry.scAddr, registry.appTypeIds, registry.status);
    }

    function listed(bytes32[] storage list, bytes32 id) private view returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == id) return true;
        }
        return false;
    }
}
